"""A backfill through the real scheduler: `airflow backfill create` loads each day once, in order, even
when the backfill form names a day."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from chat_ingest.operators.botslovers import BotsloversToStagingOperator
from chat_ingest.sources import botslovers
from chat_ingest.windows import day_window
from sandbox.demo import wait_until_every_run_ended
from tests.support.sandbox import staging_checksum

pytestmark = pytest.mark.integration
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def _data_checksum(sandbox) -> dict[str, tuple[int, str]]:
    """Staging contents without lineage columns (run ids differ between two ways of loading)."""
    return {spec.name: staging_checksum(sandbox, spec) for spec in botslovers.TABLES.values()}


def test_backfill_loads_each_day_once_like_single_day_runs(clean_warehouse, airflow, airflow_services):
    sandbox = clean_warehouse
    days = sandbox.days
    # The scheduler only runs an unpaused DAG (which also schedules its latest interval, a later day).
    subprocess.run([AIRFLOW, "dags", "unpause", "botslovers_ingest"], env=airflow_services.env, check=True,
                   capture_output=True, timeout=120)
    # The backfill dialog shows the trigger form: a day typed there must not collapse every run onto it.
    res = subprocess.run([AIRFLOW, "backfill", "create", "--dag-id", "botslovers_ingest", "--max-active-runs", "1",
                          "--from-date", days[0].isoformat(), "--to-date", days[-1].isoformat(),
                          "--dag-run-conf", json.dumps({"date": days[-1].isoformat()})],
                         env=airflow_services.env, capture_output=True, text=True, timeout=120)
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
    wait_until_every_run_ended(airflow, ("botslovers_ingest",), timeout=deadline - time.monotonic())
    with psycopg.connect(airflow.metadata_dsn) as conn:
        loaded_days = [r[0].date() for r in conn.execute(
            "SELECT data_interval_start FROM dag_run WHERE dag_id = 'botslovers_ingest' AND state = 'success' "
            "AND run_type IN ('backfill', 'scheduled') ORDER BY 1")]
    subprocess.run([AIRFLOW, "dags", "pause", "botslovers_ingest"], env=airflow_services.env, check=True,
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
