"""``make demo``: the main job on the local sandbox, as real Airflow DAG runs.

Starts the sandbox (generating a few days of synthetic data that end yesterday),
prepares Airflow's metadata database (in the sandbox's PostgreSQL), runs every
ingestion DAG for each day and then the reporting DAG where it exists, and prints
what landed, how validation went and the headline KPIs.  The runs stay in the
metadata database: ``make ui`` shows them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import psycopg

from sandbox.__main__ import DEFAULT_DIR, down, up
from sandbox.report import write_report
from sandbox.services import Airflow, read_env

#: Ingestion DAGs in the order they run; the demo runs those whose file exists.
INGESTION_DAGS = ("botslovers_ingest", "a8_ingest", "ultimate_ingest", "unless_ingest")
REPORTING_DAG = "reporting"


def summary(warehouse_dsn: str, start: dt.date, end: dt.date, since: dt.datetime) -> str:
    """What this demo's runs (those since ``since``) landed and validated, and the KPIs of its days."""
    lines = []
    with psycopg.connect(warehouse_dsn) as conn:
        loads = conn.execute(
            "SELECT source || '.' || table_name, sum(rows_extracted), sum(rows_landed), sum(rows_unchanged), "
            "sum(rows_rejected) FROM audit.load_log WHERE loaded_at >= %s GROUP BY 1 ORDER BY 1", (since,),
        ).fetchall()
        lines.append(f"{'table':36} {'extracted':>10} {'landed':>8} {'unchanged':>10} {'rejected':>8}")
        lines += [f"{t:36} {e:>10} {l:>8} {u:>10} {r:>8}" for t, e, l, u, r in loads]
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="leave the sandbox running afterwards")
    a = p.parse_args(argv)
    root = a.dir.resolve()
    started = time.monotonic()
    since = dt.datetime.now(dt.timezone.utc)
    if up(root, None, a.days, seed=7, bad_records=0.0, timeout=300):
        return 1
    try:
        env = read_env(root / "env")
        airflow = Airflow(env)
        log = root / "demo.log"
        log.write_text("")
        first = dt.date.fromisoformat(env["SANDBOX_DATASET_START"])
        last = dt.date.fromisoformat(env["SANDBOX_DATASET_END"])
        days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        for dag_id in INGESTION_DAGS:
            for day in days:
                t0 = time.monotonic()
                run_id = airflow.trigger_day(dag_id, day, log)
                print(f"{dag_id:20} {day}  success  ({time.monotonic() - t0:4.0f}s, {run_id})", flush=True)
        t0 = time.monotonic()  # the reporting DAG rebuilds every day the loads changed
        run_id = airflow.trigger(REPORTING_DAG, {}, log)
        print(f"{REPORTING_DAG:20} {'changed days':10}  success  ({time.monotonic() - t0:4.0f}s, {run_id})",
              flush=True)
        print()
        print(summary(env["CHAT_INGEST_WAREHOUSE_DSN"], first, last, since))
        report = write_report(env["CHAT_INGEST_WAREHOUSE_DSN"], root / "report.html")
        print(f"\nHTML report (KPI trends, outcome mix, agent status time): {report}")
        print(f"\nDAGs run: {', '.join([*INGESTION_DAGS, REPORTING_DAG])}; Airflow log: {log}; GX Data Docs under {env['AIRFLOW_HOME']}/gx/")
        print(f"demo finished in {time.monotonic() - started:.0f}s; inspect the runs with `make ui`")
        return 0
    finally:
        if not a.keep:
            down(root)


if __name__ == "__main__":
    sys.exit(main())
