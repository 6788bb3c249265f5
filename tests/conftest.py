"""Shared fixtures: one real sandbox (PostgreSQL, ClickHouse-over-HTTP, S3, Ultimate API) per session."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest
import requests
import yaml

from sandbox.__main__ import down, up
from sandbox.generator import generate
from sandbox.services import Airflow, Supervisor, free_port, login, read_env, ui_env
from tests.support.sandbox import DAG_IDS, TEST_DAYS, TEST_START, Sandbox, Services, Webhook, empty_botslovers_company
from tests.support.sources import TEST_COMPANY


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory) -> Sandbox:
    root = tmp_path_factory.mktemp("sandbox")
    dataset = root / "dataset"
    manifest = generate(dataset, seed=11, days=TEST_DAYS, start=TEST_START, per_day=12)
    assert up(root, dataset, TEST_DAYS, seed=11, bad_records=0.0, timeout=300, owned=True) == 0, \
        (root / "sandbox.log").read_text()
    env = read_env(root / "env")
    saved = dict(os.environ)
    os.environ.update(env)
    os.environ["CHAT_INGEST_GX_ROOT"] = str(root / "gx")
    try:
        yield Sandbox(root, env, dataset, manifest)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        down(root)


@pytest.fixture(scope="session")
def airflow(sandbox) -> Airflow:
    """The airflow CLI on the sandbox's metadata database (``up`` migrated it, as `make sandbox-up` does)."""
    return Airflow({**sandbox.env, "CHAT_INGEST_GX_ROOT": str(sandbox.root / "gx")})


@pytest.fixture(scope="session")
def airflow_services(sandbox, airflow, tmp_path_factory):
    """The services ``make ui`` runs (supervised, locked, on loopback) with a LocalExecutor, and alerts on:
    failures and late data (``landed_by`` 00:00, so every scheduled run's deadline has passed) post to a
    webhook."""
    root = tmp_path_factory.mktemp("airflow-services")
    port, webhook = free_port(), Webhook()
    config = yaml.safe_load((sandbox.root / "sources.yaml").read_text())
    config["alerts"] = {"http_conn_id": "chat_alerts", "landed_by": "00:00"}
    (root / "sources.yaml").write_text(yaml.safe_dump(config))
    env = {
        **ui_env(airflow.env, port),
        "CHAT_INGEST_GX_ROOT": airflow.env["CHAT_INGEST_GX_ROOT"],
        "CHAT_INGEST_CONFIG": str(root / "sources.yaml"),
        "AIRFLOW_CONN_CHAT_ALERTS": webhook.url,
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # write what this dag-processor parses (this configuration) at once, even if a test's
        # `airflow dags test` serialized the DAGs moments ago
        "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    }
    user, password = login(env)
    started = dt.datetime.now(dt.timezone.utc)
    supervisor = Supervisor(env, root).start()
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2).ok \
                        and airflow.parsed_since(DAG_IDS, started):
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, supervisor.log_of("api-server").read_text()[-3000:]
            time.sleep(1)
        yield Services(env, port, root, webhook, supervisor, {user: password})
    finally:
        supervisor.stop()
        webhook.shutdown()


@pytest.fixture
def faults(sandbox):
    """Queue misbehaviour in the stand-in for the next matching requests; cleared afterwards."""
    url = sandbox.env["SANDBOX_ULTIMATE_URL"] + "/_sandbox/faults"
    headers = {"authorization": sandbox.env["SANDBOX_ULTIMATE_ADMIN_TOKEN"]}

    def inject(*items: dict) -> None:
        requests.post(url, headers=headers, json={"faults": list(items)}, timeout=5).raise_for_status()

    def remaining() -> int:
        """How many injected faults are still unplayed (each request plays one)."""
        return sum(f["times"] for f in requests.get(url, headers=headers, timeout=5).json()["faults"])

    inject.remaining = remaining
    yield inject
    requests.post(url, headers=headers, json={"clear": True}, timeout=5).raise_for_status()


@pytest.fixture
def clean_warehouse(sandbox):
    """Start a test from an empty warehouse (staging, audit and reporting dropped)."""
    with sandbox.warehouse() as conn:
        conn.execute("DROP SCHEMA IF EXISTS staging, audit, reporting CASCADE")
    return sandbox




@pytest.fixture
def testco(sandbox):
    """A company of the test's own: empty tables the test fills with exactly the rows it needs."""
    with empty_botslovers_company(sandbox, TEST_COMPANY) as client:
        yield client
