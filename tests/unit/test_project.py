"""Dotted paths the services are configured with resolve (a missing one only shows when a Celery
cluster or the forkserver starts)."""

from __future__ import annotations

import importlib

import yaml

from chat_ingest.project import SCHEDULER_FORKSERVER_PRELOAD, TASK_PRELOAD_MODULES, host_name
from tests.support.sandbox import REPO


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


def test_a_preloaded_process_hands_its_compiled_data_docs_templates_to_every_page(monkeypatch):
    """GX builds each Data Docs page with a new Jinja environment; none of them compiles a template again."""
    import jinja2
    from great_expectations.render.view.view import DefaultJinjaView

    from chat_ingest.gx_templates import TEMPLATES

    assert TEMPLATES.code  # filled on import (by the preloading process, in production)
    compiled: list[str] = []
    compile_template = jinja2.Environment.compile
    monkeypatch.setattr(jinja2.Environment, "compile",
                        lambda self, source, name=None, *a, **k: compiled.append(name) or compile_template(
                            self, source, name, *a, **k))
    environment = DefaultJinjaView().env
    assert environment.bytecode_cache is TEMPLATES
    page = environment.get_template("index_page.j2")
    assert compiled == [] and page.render  # a page's template, ready without a compile
    TEMPLATES.clear()  # emptied: the first page compiles the template again, the next ones share it
    DefaultJinjaView().env.get_template("index_page.j2")
    DefaultJinjaView().env.get_template("index_page.j2")
    assert compiled == ["index_page.j2"]
