"""Dotted paths the services are configured with resolve (a missing one only shows when a Celery
cluster or the forkserver starts)."""

from __future__ import annotations

import importlib

import yaml

from chat_ingest.project import SCHEDULER_FORKSERVER_PRELOAD, TASK_PRELOAD_MODULES, host_name
from tests.conftest import REPO


def test_the_task_host_name_is_the_workers_own_when_set(monkeypatch):
    monkeypatch.setenv("CHAT_INGEST_HOST_NAME", "worker-7")
    assert host_name() == "worker-7"
    monkeypatch.delenv("CHAT_INGEST_HOST_NAME")
    assert host_name()


def test_every_configured_callable_and_preloaded_module_imports():
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())["x-airflow-common"]["environment"]
    callables = {"chat_ingest.project.host_name", *(v for k, v in compose.items() if k.endswith("_CALLABLE"))}
    for path in callables:
        module, _, name = path.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), path
    for module in {*SCHEDULER_FORKSERVER_PRELOAD, *TASK_PRELOAD_MODULES}:
        importlib.import_module(module)
