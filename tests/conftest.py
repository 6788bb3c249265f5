"""Shared fixtures: one real sandbox (PostgreSQL, ClickHouse-over-HTTP, S3, Ultimate API) per session."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests

from sandbox.__main__ import down, up
from sandbox.demo import Airflow, read_env
from sandbox.generator import generate

REPO = Path(__file__).resolve().parents[1]
#: The test dataset: three days ending the day before yesterday (inside Ultimate's 30-day window).
TEST_DAYS = 3
TEST_START = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=TEST_DAYS + 1)


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
    assert up(root, dataset, TEST_DAYS, seed=11, bad_records=0.0, timeout=300) == 0, (root / "sandbox.log").read_text()
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
    """The airflow CLI on the sandbox's metadata database, migrated once per session."""
    cli = Airflow({**sandbox.env, "CHAT_INGEST_GX_ROOT": str(sandbox.root / "gx")})
    cli.run("db", "migrate", timeout=600, log=sandbox.root / "airflow.log")
    cli.run("pools", "import", str(REPO / "include" / "config" / "pools.json"), log=sandbox.root / "airflow.log")
    return cli


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


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter with the project on the path (for import-time checks)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {}), "PYTHONPATH": f"{REPO / 'plugins'}:{REPO}"})
