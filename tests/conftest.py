"""Shared fixtures: one real sandbox (PostgreSQL, ClickHouse-over-HTTP, S3, Ultimate API) per session."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
import requests
import yaml

from sandbox.__main__ import down, up
from sandbox.generator import generate
from sandbox.services import Airflow, Supervisor, api_token, free_port, login, read_env, ui_env

REPO = Path(__file__).resolve().parents[1]
#: The test dataset: three days ending the day before yesterday (inside Ultimate's 30-day window).
TEST_DAYS = 3
TEST_START = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=TEST_DAYS + 1)


#: What a sandbox exports to the session (its env file): a process or an in-process ``up()`` that sees any
#: of it works on the session's sandbox instead of its own (the warehouse DSN alone makes it "external").
SANDBOX_ENV_PREFIXES = ("AIRFLOW", "CHAT_INGEST", "SANDBOX_")


def newcomer_env(**extra: str) -> dict[str, str]:
    """This environment as a newcomer's shell has it: nothing of the session's sandbox, the project on
    the path; everything else comes from the sandbox directory a command is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SANDBOX_ENV_PREFIXES)}
    return {**env, "PYTHONPATH": f"{REPO / 'plugins'}{os.pathsep}{REPO}", **extra}


@contextlib.contextmanager
def outside_the_session_sandbox():
    """``os.environ`` without the session sandbox's variables, for an in-process ``up()`` of another."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith(SANDBOX_ENV_PREFIXES)]:
            mp.delenv(key)
        yield


@dataclass
class Sandbox:
    root: Path
    env: dict[str, str]
    dataset: Path
    manifest: dict

    @property
    def days(self) -> list[dt.date]:
        start = dt.date.fromisoformat(self.manifest["start"])
        return [start + dt.timedelta(days=i) for i in range(self.manifest["days"])]

    @property
    def warehouse_dsn(self) -> str:
        return self.env["CHAT_INGEST_WAREHOUSE_DSN"]

    def warehouse(self) -> psycopg.Connection:
        return psycopg.connect(self.warehouse_dsn, autocommit=True)

    def s3(self):
        """A boto3 client of the S3 stand-in, with the Unless connection's keys."""
        from bench.volumes import s3_client

        return s3_client(self.env)

    def clickhouse_admin(self):
        import clickhouse_connect

        port = int(self.env["SANDBOX_CLICKHOUSE_URL"].rsplit(":", 1)[1])
        return clickhouse_connect.get_client(host="127.0.0.1", port=port, username="admin",
                                             password=self.env["SANDBOX_CLICKHOUSE_ADMIN_PASSWORD"])


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


class Webhook(ThreadingHTTPServer):
    """A chat webhook on loopback that keeps every JSON message posted to it."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.received.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # keep the test output clean
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


@dataclass
class Services:
    """Airflow's api-server, scheduler, dag-processor and triggerer over the sandbox, as ``make ui`` runs them."""

    env: dict[str, str]
    port: int
    logs: Path
    webhook: Webhook
    supervisor: Supervisor
    users: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self) -> str:
        return api_token(self.url, *next(iter(self.users.items())))


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


DAG_IDS = ("botslovers_ingest", "a8_ingest", "ultimate_ingest", "unless_ingest", "reporting")


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


@contextlib.contextmanager
def empty_botslovers_company(sandbox: Sandbox, company: str):
    """Empty Botslovers tables of a company of a test's own, dropped afterwards; yields the admin client."""
    from chat_ingest.sources import botslovers
    from sandbox.stack import clickhouse_ddl

    client = sandbox.clickhouse_admin()
    for spec in botslovers.TABLES.values():
        client.command(f"DROP TABLE IF EXISTS {spec.name}_{company}")
        client.command(clickhouse_ddl(spec, f"{spec.name}_{company}"))
    try:
        yield client
    finally:
        for spec in botslovers.TABLES.values():
            client.command(f"DROP TABLE IF EXISTS {spec.name}_{company}")


def load_window(day: dt.date, days: int = 1) -> dict[str, str]:
    """The ``window`` argument of a landing operator: ``days`` whole UTC days from ``day``."""
    from chat_ingest.windows import day_window

    start, _ = day_window(day)
    return {"start": start.isoformat(), "end": (start + dt.timedelta(days=days)).isoformat()}


def staging_checksum(sandbox: Sandbox, spec, tenant: str | None = None) -> tuple[int, str]:
    """Row count and checksum of a staging table's data: its tenant and spec columns, not the lineage
    (run ids differ between two ways of landing the same data); only ``tenant``'s rows when given.
    ``(0, "")`` when the table does not exist."""
    from psycopg import sql

    columns = list(dict.fromkeys([*filter(None, [spec.tenant_column]), *spec.column_names]))
    where = sql.SQL("WHERE {} = %s").format(sql.Identifier(spec.tenant_column)) if tenant is not None else sql.SQL("")
    with sandbox.warehouse() as conn:
        if not conn.execute("SELECT to_regclass(%s)", (f"staging.{spec.staging_table}",)).fetchone()[0]:
            return 0, ""
        return conn.execute(sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) FROM "
            "(SELECT {cols} FROM {table} {where}) r"
        ).format(cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
                 table=sql.Identifier("staging", spec.staging_table), where=where),
            (tenant,) if tenant is not None else ()).fetchone()


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter with the project on the path (for import-time checks)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {}), "PYTHONPATH": f"{REPO / 'plugins'}:{REPO}"})
