"""The session's sandbox as tests see it, and helpers that work on any sandbox."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest

from sandbox.services import Supervisor, api_token

REPO = Path(__file__).resolve().parents[2]


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


DAG_IDS = ("botslovers_ingest", "a8_ingest", "ultimate_ingest", "unless_ingest", "reporting")


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
