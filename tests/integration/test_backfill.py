"""A backfill through the real scheduler: `airflow backfill create` loads each day once, in order."""

from __future__ import annotations

import datetime as dt
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import requests

from chat_ingest.operators.botslovers import BotsloversToStagingOperator
from chat_ingest.sources import botslovers
from chat_ingest.windows import day_window
from sandbox.demo import Airflow

pytestmark = pytest.mark.integration
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def airflow_services(sandbox, airflow, tmp_path_factory):
    """api-server (with the execution API), scheduler and dag-processor on the sandbox's metadata DB."""
    port = _free_port()
    env = {
        **airflow.env,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    }
    logs = tmp_path_factory.mktemp("airflow-services")
    services = Airflow(env)
    procs = [services.start("api-server", "--port", str(port), log=logs / "api-server.log"),
             services.start("scheduler", log=logs / "scheduler.log"),
             services.start("dag-processor", log=logs / "dag-processor.log")]
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/v2/version", timeout=2).ok and _serialized(airflow):
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (logs / "api-server.log").read_text()[-3000:]
            assert all(p.poll() is None for p in procs), [p.args for p in procs if p.poll() is not None]
            time.sleep(1)
        yield env
    finally:
        Airflow.stop(procs)


def _serialized(airflow) -> bool:
    with psycopg.connect(airflow.metadata_dsn) as conn:
        return bool(conn.execute("SELECT 1 FROM serialized_dag WHERE dag_id = 'botslovers_ingest'").fetchone())


def _data_checksum(sandbox) -> dict[str, str]:
    """Staging contents without lineage columns (run ids differ between two ways of loading)."""
    sums = {}
    with sandbox.warehouse() as conn:
        for spec in botslovers.TABLES.values():
            cols = ", ".join(["company", *spec.column_names])
            sums[spec.name] = conn.execute(
                f"SELECT md5(string_agg(r::text, '|' ORDER BY r::text)) FROM "
                f"(SELECT {cols} FROM staging.{spec.staging_table}) r").fetchone()[0]
    return sums


def test_backfill_loads_each_day_once_like_single_day_runs(clean_warehouse, airflow, airflow_services):
    sandbox = clean_warehouse
    days = sandbox.days
    # The scheduler only runs an unpaused DAG (which also schedules its latest interval, a later day).
    subprocess.run([AIRFLOW, "dags", "unpause", "botslovers_ingest"], env=airflow_services, check=True,
                   capture_output=True, timeout=120)
    res = subprocess.run([AIRFLOW, "backfill", "create", "--dag-id", "botslovers_ingest", "--max-active-runs", "1",
                          "--from-date", days[0].isoformat(), "--to-date", days[-1].isoformat()],
                         env=airflow_services, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    deadline = time.monotonic() + 900
    while True:
        with psycopg.connect(airflow.metadata_dsn) as conn:
            runs = conn.execute(
                "SELECT data_interval_start, data_interval_end, state, run_id, start_date FROM dag_run "
                "WHERE dag_id = 'botslovers_ingest' AND run_type = 'backfill' ORDER BY data_interval_start"
            ).fetchall()
        if len(runs) == len(days) and all(r[2] in ("success", "failed") for r in runs):
            break
        assert time.monotonic() < deadline, runs
        time.sleep(3)
    assert [r[2] for r in runs] == ["success"] * len(days), runs
    assert [(r[0].date(), r[1] - r[0]) for r in runs] == [(d, dt.timedelta(days=1)) for d in days]
    assert [r[4] for r in runs] == sorted(r[4] for r in runs)  # one day after the other, in order
    with sandbox.warehouse() as conn:
        loads = conn.execute(
            "SELECT window_start::date, count(*) FROM audit.load_log WHERE window_start::date = ANY(%s) "
            "GROUP BY 1 ORDER BY 1", (days,)).fetchall()
    assert loads == [(d, 6) for d in days]  # each day loaded once: 3 tables x 2 companies
    # Unpausing also scheduled the latest interval; let it finish, then load the same days one by one.
    while True:
        with psycopg.connect(airflow.metadata_dsn) as conn:
            active = conn.execute("SELECT count(*) FROM dag_run WHERE dag_id = 'botslovers_ingest' "
                                  "AND state IN ('queued', 'running')").fetchone()[0]
            loaded_days = [r[0].date() for r in conn.execute(
                "SELECT data_interval_start FROM dag_run WHERE dag_id = 'botslovers_ingest' AND state = 'success' "
                "AND run_type IN ('backfill', 'scheduled') ORDER BY 1")]
        if not active:
            break
        assert time.monotonic() < deadline
        time.sleep(3)
    subprocess.run([AIRFLOW, "dags", "pause", "botslovers_ingest"], env=airflow_services, check=True,
                   capture_output=True, timeout=120)
    backfilled = _data_checksum(sandbox)

    with sandbox.warehouse() as conn:
        conn.execute("DROP SCHEMA staging CASCADE")
    for day in loaded_days:
        start, end = day_window(day)
        for company in sandbox.manifest["botslovers"]["companies"]:
            for table in botslovers.TABLES:
                BotsloversToStagingOperator(
                    task_id="single", tenant=company, table=table,
                    window={"start": start.isoformat(), "end": end.isoformat()},
                ).execute({"run_id": f"single-{day}"})
    assert _data_checksum(sandbox) == backfilled
