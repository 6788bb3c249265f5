"""``make demo``: the main job on the local sandbox, as real Airflow DAG runs under a real scheduler.

Starts the sandbox (generating a few days of synthetic data that end yesterday, and preparing
Airflow's metadata database in its PostgreSQL), then Airflow's services as ``make ui`` runs them,
and operates the DAGs as a user would: unpausing the ingestion DAGs makes the scheduler run
yesterday's daily run, and ``airflow backfill create`` loads the days before it.  The reporting DAG
then rebuilds every day the loads changed.  It prints each run as it ends, what landed, how
validation went and the headline KPIs, and writes the HTML report.  The runs, with their task
logs, stay in the metadata database: ``make ui`` shows them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import psycopg

from sandbox.__main__ import DEFAULT_DIR, down, up
from sandbox.report import write_report
from sandbox.services import Airflow, Supervisor, free_port, read_env, ui_env

#: Ingestion DAGs in the order they run; the demo runs those whose file exists.
INGESTION_DAGS = ("botslovers_ingest", "a8_ingest", "ultimate_ingest", "unless_ingest")
REPORTING_DAG = "reporting"
UTC = dt.timezone.utc


def summary(warehouse_dsn: str, start: dt.date, end: dt.date, since: dt.datetime) -> str:
    """What this demo's runs (those since ``since``) landed and validated, and the KPIs of its days."""
    lines = []
    with psycopg.connect(warehouse_dsn) as conn:
        loads = conn.execute(
            "SELECT source || '.' || table_name, sum(rows_extracted), sum(rows_landed), sum(rows_unchanged), "
            "sum(rows_duplicate), sum(rows_rejected), sum(rows_extracted) / greatest(sum(duration_seconds), 0.001) "
            "FROM audit.load_log WHERE loaded_at >= %s GROUP BY 1 ORDER BY 1", (since,),
        ).fetchall()
        lines.append(f"{'table':36} {'extracted':>10} {'landed':>8} {'unchanged':>10} {'duplicate':>10} "
                     f"{'rejected':>8} {'rows/s':>8}")
        lines += [f"{t:36} {e:>10} {landed:>8} {u:>10} {d:>10} {r:>8} {float(rate):>8,.0f}"
                  for t, e, landed, u, d, r, rate in loads]
        lines.append("(a duplicate is a row the source sent twice in one window: landed once, counted here)")
        checks = conn.execute(
            "SELECT source || '.' || table_name, count(*) FILTER (WHERE success), count(*) FILTER (WHERE NOT success) "
            "FROM audit.validation_results WHERE validated_at >= %s GROUP BY 1 ORDER BY 1", (since,),
        ).fetchall()
        lines.append("")
        lines.append("validation (Great Expectations): " + (
            ", ".join(f"{t}: {ok} passed{f', {bad} FAILED' if bad else ''}" for t, ok, bad in checks) or "none"))
        lines.append("")
        rows = conn.execute(
            "SELECT conversation_date, source, tenant, total_conversations, round(bot_handled_rate, 3), "
            "round(escalation_rate, 3), round(deflection_rate, 3) FROM reporting.daily_bot_kpis "
            "WHERE conversation_date BETWEEN %s AND %s ORDER BY 2, 3, 1", (start, end),
        ).fetchall()
        lines.append("reporting.daily_bot_kpis of the demo's days:")
        lines.append(f"{'day':10} {'source':10} {'tenant':12} {'convs':>6} {'bot':>6} {'escal':>6} {'defl':>6}")
        lines += [f"{d} {s:10} {t:12} {n:>6} {b:>6} {e:>6} {f:>6}" for d, s, t, n, b, e, f in rows]
    return "\n".join(lines)


def wait_for_runs(airflow: Airflow, dag_id: str, days: list[dt.date], timeout: float = 3600) -> list[tuple]:
    """Wait until ``dag_id`` has an ended run for each of ``days`` (by data interval); print each as it
    ends, and return them: (day, run id, state, seconds)."""
    shown: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(airflow.metadata_dsn) as conn:
            runs = conn.execute(
                "SELECT DISTINCT ON (data_interval_start) data_interval_start::date, run_id, state, "
                "extract(epoch FROM end_date - start_date) FROM dag_run WHERE dag_id = %s "
                "AND data_interval_start::date = ANY(%s) ORDER BY data_interval_start, id DESC", (dag_id, days),
            ).fetchall()
        for day, run_id, state, seconds in runs:
            if state in ("success", "failed") and run_id not in shown:
                shown.add(run_id)
                print(f"{dag_id:20} {day}  {state:8} ({seconds or 0:4.0f}s, {run_id})", flush=True)
        if len(runs) == len(days) and all(r[2] in ("success", "failed") for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dag_id}: runs of {days} did not end within {timeout:.0f}s: {runs}")
        time.sleep(3)


def wait_until_every_run_ended(airflow: Airflow, dag_ids: tuple[str, ...], timeout: float) -> dict[str, list[str]]:
    """Wait until no run of ``dag_ids`` is queued or running, and return each DAG's run states, oldest
    first.  A backfill's runs are not all there is: unpausing a DAG also makes its latest scheduled run,
    which a backfill's checks must not race."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(airflow.metadata_dsn) as conn:
            runs = conn.execute("SELECT dag_id, state FROM dag_run WHERE dag_id = ANY(%s) ORDER BY dag_id, id",
                                (list(dag_ids),)).fetchall()
        if not any(state in ("queued", "running") for _, state in runs):
            return {dag_id: [state for d, state in runs if d == dag_id] for dag_id in dag_ids}
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs of {dag_ids} still going after {timeout:.0f}s: {runs}")
        time.sleep(3)


def reporting_busy(conn) -> bool:
    """Whether the reporting DAG has a run queued or running, or one its Assets are about to trigger."""
    return conn.execute(
        "SELECT EXISTS (SELECT FROM dag_run WHERE dag_id = %s AND state IN ('queued', 'running')) "
        "OR EXISTS (SELECT FROM asset_dag_run_queue WHERE target_dag_id = %s)", (REPORTING_DAG, REPORTING_DAG)
    ).fetchone()[0]


def run_reporting(airflow: Airflow, warehouse_dsn: str, timeout: float = 1800) -> None:
    """Let the reporting DAG (run by the staging Assets the loads published) finish, and trigger it once
    more if changes are still unconsumed; print its runs."""
    deadline, triggered = time.monotonic() + timeout, False
    while True:
        with psycopg.connect(airflow.metadata_dsn) as conn:
            busy = reporting_busy(conn)
        if not busy:
            with psycopg.connect(warehouse_dsn) as conn:
                pending = conn.execute("SELECT count(*) FROM audit.changed_days WHERE consumed_at IS NULL"
                                       ).fetchone()[0]
            if not pending:
                break
            if not triggered:
                airflow.run("dags", "trigger", REPORTING_DAG, "--run-id", f"demo__{dt.datetime.now(UTC):%Y%m%dT%H%M%S}")
                triggered = True
        if time.monotonic() > deadline:
            raise RuntimeError(f"the reporting DAG did not catch up within {timeout:.0f}s")
        time.sleep(3)
    with psycopg.connect(airflow.metadata_dsn) as conn:
        runs = conn.execute("SELECT run_id, run_type, state, extract(epoch FROM end_date - start_date) FROM dag_run "
                            "WHERE dag_id = %s ORDER BY id", (REPORTING_DAG,)).fetchall()
    for run_id, run_type, state, seconds in runs:
        print(f"{REPORTING_DAG:20} {run_type:10}  {state:8} ({seconds or 0:4.0f}s, {run_id})", flush=True)
    if any(state != "success" for _, _, state, _ in runs):
        raise RuntimeError("a reporting run failed: open it in `make ui`")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="leave the sandbox running afterwards")
    a = p.parse_args(argv)
    root = a.dir.resolve()
    started = time.monotonic()
    since = dt.datetime.now(UTC)
    if up(root, None, a.days, seed=7, bad_records=0.0, timeout=300, owned=True):
        return 1
    try:
        env = ui_env({**os.environ, **read_env(root / "env")}, free_port())
        airflow = Airflow(env)
        first = dt.date.fromisoformat(env["SANDBOX_DATASET_START"])
        last = dt.date.fromisoformat(env["SANDBOX_DATASET_END"])
        days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        with Supervisor(env, root / "logs") as services:
            print(f"Airflow's services started (logs: {services.logs}); waiting for the DAGs to be parsed ...",
                  flush=True)
            deadline = time.monotonic() + 300
            while not airflow.parsed_since([*INGESTION_DAGS, REPORTING_DAG], since):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the DAGs were not parsed within 300s: {services.log_of('dag-processor')}")
                time.sleep(2)
            log = root / "demo.log"
            for dag_id in (*INGESTION_DAGS, REPORTING_DAG):  # the scheduler starts yesterday's daily runs
                airflow.run("dags", "unpause", dag_id, log=log)
            for dag_id in INGESTION_DAGS:  # and a backfill the days before (a day that has a run is skipped)
                airflow.backfill(dag_id, first, last, log=log)
            failed = [(dag_id, run[1]) for dag_id in INGESTION_DAGS for run in wait_for_runs(airflow, dag_id, days)
                      if run[2] != "success"]
            if failed:
                raise RuntimeError(f"runs failed: {failed}; open them in `make ui`")
            run_reporting(airflow, env["CHAT_INGEST_WAREHOUSE_DSN"])
            for dag_id in (*INGESTION_DAGS, REPORTING_DAG):  # nothing runs behind the user's back later
                airflow.run("dags", "pause", dag_id, log=log)
        print()
        print(summary(env["CHAT_INGEST_WAREHOUSE_DSN"], first, last, since))
        report = write_report(env["CHAT_INGEST_WAREHOUSE_DSN"], root / "report.html")
        print(f"\nHTML report (freshness, KPIs per tenant, intents, agents): {report}")
        print(f"\nTask logs: {env['AIRFLOW_HOME']}/logs/; GX Data Docs under {env['AIRFLOW_HOME']}/gx/")
        print(f"demo finished in {time.monotonic() - started:.0f}s; inspect the runs and their logs with `make ui`")
        return 0
    finally:
        if not a.keep:
            down(root)


if __name__ == "__main__":
    sys.exit(main())
