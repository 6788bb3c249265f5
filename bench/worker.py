"""One measured run in a fresh process, so its peak RSS is its own: ``python -m bench.worker KIND ...``.

Prints one JSON line: rows, seconds, peak_rss_mb.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time


def botslovers_project(company: str, day: str) -> int:
    """The DAG's extract-and-land code: hook → staging loader → idempotent merge."""
    from chat_ingest.operators.botslovers import BotsloversToStagingOperator
    from chat_ingest.windows import day_window
    import datetime as dt

    start, end = day_window(dt.date.fromisoformat(day))
    op = BotsloversToStagingOperator(task_id="bench", tenant=company, table="messages",
                                     window={"start": start.isoformat(), "end": end.isoformat()})
    return op.execute({"run_id": f"bench-{time.time_ns()}"})["rows_extracted"]


def botslovers_baseline(company: str, day: str) -> int:
    """The raw floor: ``SELECT … FORMAT CSV`` over HTTP piped into ``COPY`` into an unindexed table."""
    import psycopg
    import requests

    url = os.environ["SANDBOX_CLICKHOUSE_URL"]
    auth = (os.environ["SANDBOX_CLICKHOUSE_USER"], os.environ["SANDBOX_CLICKHOUSE_PASSWORD"])
    query = (f"SELECT sender_id, sender_type, id, created_at, channel, session, direction, type, text, language "
             f"FROM messages_{company} WHERE created_at >= toDateTime('{day} 00:00:00', 'UTC') "
             f"AND created_at < toDateTime('{day} 00:00:00', 'UTC') + INTERVAL 1 DAY FORMAT CSV")
    with psycopg.connect(os.environ["CHAT_INGEST_WAREHOUSE_DSN"]) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_baseline")
        conn.execute("CREATE UNLOGGED TABLE bench_baseline (sender_id text, sender_type text, id text, "
                     "created_at timestamptz, channel text, session text, direction text, type text, text text, "
                     "language text)")
        with requests.post(url, data=query, auth=auth, stream=True, timeout=600) as res, \
                conn.cursor().copy("COPY bench_baseline FROM STDIN (FORMAT csv)") as copy:
            res.raise_for_status()
            for chunk in res.iter_content(1 << 20):
                copy.write(chunk)
        rows = conn.execute("SELECT count(*) FROM bench_baseline").fetchone()[0]
        conn.execute("DROP TABLE bench_baseline")
    return rows


KINDS = {"botslovers-project": botslovers_project, "botslovers-baseline": botslovers_baseline}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=sorted(KINDS))
    p.add_argument("--company", required=True)
    p.add_argument("--day", required=True)
    a = p.parse_args()
    t0 = time.perf_counter()
    rows = KINDS[a.kind](a.company, a.day)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "seconds": round(seconds, 3), "peak_rss_mb": round(peak_mb, 1)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
