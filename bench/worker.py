"""One measured run in a fresh process, so its peak RSS is its own: ``python -m bench.worker KIND ...``.

Prints one JSON line: rows, seconds, peak_rss_mb.  ``KIND`` is ``<source>-project``
(the DAG's own code) or ``<source>-baseline`` (the raw floor it is compared with),
or ``reporting-rebuild`` / ``land-all`` (setup of the reporting benchmark, not measured).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

#: The A8 tables of the A8 benchmark: the two the reporting layer reads most.
A8_TABLES = ("messages", "chat_state")
#: Threads of the Unless benchmark, the project's and the baseline's alike (the operator's default).
UNLESS_THREADS = 16


def _window(start: dt.date, end: dt.date) -> dict[str, str]:
    from chat_ingest.windows import day_window

    return {"start": day_window(start)[0].isoformat(), "end": day_window(end)[0].isoformat()}


def _context() -> dict:
    return {"run_id": f"bench-{time.time_ns()}"}


def _baseline_copy_target(conn, columns: list[tuple[str, str]]) -> None:
    """The baselines' landing table: unindexed, typed like the source, and logged like every table
    the project writes (an unlogged one skips the write-ahead log no durable load can skip)."""
    from psycopg import sql

    conn.execute("DROP TABLE IF EXISTS bench_baseline")
    conn.execute(sql.SQL("CREATE TABLE bench_baseline ({})").format(sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(pg_type)) for name, pg_type in columns)))


def _baseline_rows(conn) -> int:
    rows = conn.execute("SELECT count(*) FROM bench_baseline").fetchone()[0]
    conn.execute("DROP TABLE bench_baseline")
    return rows


# -- Botslovers ----------------------------------------------------------------------------------

def botslovers_project(tenant: str, start: dt.date, end: dt.date) -> int:
    """The DAG's extract-and-land code: hook → staging loader → idempotent merge."""
    from chat_ingest.operators.botslovers import BotsloversToStagingOperator

    op = BotsloversToStagingOperator(task_id="bench", tenant=tenant, table="messages", window=_window(start, end))
    return op.execute(_context())["rows_extracted"]


def botslovers_baseline(tenant: str, start: dt.date, end: dt.date) -> int:
    """``SELECT … FORMAT CSV`` over HTTP piped into ``COPY`` into an unindexed table."""
    import psycopg
    import requests

    from chat_ingest.sources.botslovers import MESSAGES

    url = os.environ["SANDBOX_CLICKHOUSE_URL"]
    auth = (os.environ["SANDBOX_CLICKHOUSE_USER"], os.environ["SANDBOX_CLICKHOUSE_PASSWORD"])
    query = (f"SELECT {', '.join(MESSAGES.column_names)} FROM messages_{tenant} "
             f"WHERE created_at >= toDateTime('{start} 00:00:00', 'UTC') "
             f"AND created_at < toDateTime('{end} 00:00:00', 'UTC') FORMAT CSV")
    with psycopg.connect(os.environ["CHAT_INGEST_WAREHOUSE_DSN"]) as conn:
        _baseline_copy_target(conn, [(c.name, c.pg_type) for c in MESSAGES.columns])
        with requests.post(url, data=query, auth=auth, stream=True, timeout=600) as res, \
                conn.cursor().copy("COPY bench_baseline FROM STDIN (FORMAT csv)") as copy:
            res.raise_for_status()
            for chunk in res.iter_content(1 << 20):
                copy.write(chunk)
        return _baseline_rows(conn)


# -- A8 ------------------------------------------------------------------------------------------

def a8_project(tenant: str, start: dt.date, end: dt.date) -> int:
    """The DAG's path for each benchmarked table: COPY out of A8 → staging loader → window replace."""
    from chat_ingest.operators.a8 import A8ToStagingOperator

    return sum(A8ToStagingOperator(task_id=f"bench_{table}", tenant=tenant, table=table,
                                   window=_window(start, end)).execute(_context())["rows_extracted"]
               for table in A8_TABLES)


def a8_baseline(tenant: str, start: dt.date, end: dt.date) -> int:
    """``COPY (SELECT …) TO STDOUT`` from A8 piped into ``COPY … FROM STDIN``, table by table."""
    import psycopg
    from psycopg import sql

    from chat_ingest.sources.a8 import TABLES

    rows = 0
    with psycopg.connect(_a8_dsn()) as source, psycopg.connect(os.environ["CHAT_INGEST_WAREHOUSE_DSN"]) as conn:
        for table in A8_TABLES:
            spec = TABLES[table]
            _baseline_copy_target(conn, [(c.name, c.pg_type) for c in spec.columns])
            query = sql.SQL("COPY (SELECT {cols} FROM {table} WHERE time >= %s AND time < %s AND bot_handle = %s) "
                            "TO STDOUT").format(cols=sql.SQL(", ").join(map(sql.Identifier, spec.column_names)),
                                                table=sql.Identifier(table))
            with source.cursor().copy(query, (start, end, tenant)) as out, \
                    conn.cursor().copy("COPY bench_baseline FROM STDIN") as into:
                for data in out:
                    into.write(data)
            rows += _baseline_rows(conn)
    return rows


def _a8_dsn() -> str:
    return os.environ["AIRFLOW_CONN_A8_TIMESCALE"]


# -- Ultimate ------------------------------------------------------------------------------------

def ultimate_project(tenant: str, start: dt.date, end: dt.date) -> int:
    """The DAG's path: signed URLs → streamed parse → both tables landed in one transaction."""
    from chat_ingest.operators.ultimate import UltimateToStagingOperator

    op = UltimateToStagingOperator(task_id="bench", tenant=tenant, window=_window(start, end))
    return op.execute(_context())["conversations"]["rows_extracted"]


def ultimate_baseline(tenant: str, start: dt.date, end: dt.date) -> int:
    """Signed URL, the whole file in memory, ``orjson.loads``, one row per conversation into ``COPY``."""
    import orjson
    import psycopg
    import requests

    conn_info = json.loads(os.environ["AIRFLOW_CONN_ULTIMATE_EXPORT"])
    headers = {"authorization": conn_info["password"], "botid": tenant,
               "organizationid": conn_info["extra"]["organization_id"]}
    urls = requests.post(f"{os.environ['SANDBOX_ULTIMATE_URL']}/data-export/v2/get-signed-urls",
                         json={"date": start.isoformat()}, headers=headers, timeout=60)
    urls.raise_for_status()
    rows = 0
    with psycopg.connect(os.environ["CHAT_INGEST_WAREHOUSE_DSN"]) as conn:
        for url in urls.json()["signedUrls"]:
            records = orjson.loads(requests.get(url, timeout=600).content)
            columns = list(records[0])
            _baseline_copy_target(conn, [(c, "text") for c in columns])
            with conn.cursor().copy("COPY bench_baseline FROM STDIN") as copy:
                for record in records:
                    copy.write_row([v if isinstance(v, str) or v is None else orjson.dumps(v).decode()
                                    for v in (record.get(c) for c in columns)])
            del records
            rows += _baseline_rows(conn)
    return rows


# -- Unless --------------------------------------------------------------------------------------

def unless_project(tenant: str, start: dt.date, end: dt.date) -> int:
    """The DAG's path: list → select by LastModified → threaded GET → parse → land (objects landed)."""
    from chat_ingest.config import load_config
    from chat_ingest.operators.unless import UnlessToStagingOperator

    cfg = load_config()["unless"]
    op = UnlessToStagingOperator(task_id="bench", tenant=tenant, bucket=cfg["bucket"], account=cfg["account"],
                                 window=_window(start, end), max_workers=UNLESS_THREADS)
    return op.execute(_context())["conversations"]["rows_extracted"]


def unless_baseline(tenant: str, start: dt.date, end: dt.date) -> int:
    """boto3: list the website's prefix, GET every object with the same number of threads, no parsing."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.volumes import s3_client
    from chat_ingest.config import load_config

    cfg = load_config()["unless"]
    client = s3_client(dict(os.environ), UNLESS_THREADS)

    def keys() -> Iterator[str]:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=cfg["bucket"], Prefix=f"{cfg['account']}/conversations/{tenant}/")
        for page in pages:
            yield from (o["Key"] for o in page.get("Contents", []))

    def get(key: str) -> int:
        return len(client.get_object(Bucket=cfg["bucket"], Key=key)["Body"].read())

    with ThreadPoolExecutor(UNLESS_THREADS) as pool:
        return sum(1 for _ in pool.map(get, keys()))


# -- Reporting -----------------------------------------------------------------------------------

def land_all(tenant: str, start: dt.date, end: dt.date) -> int:
    """Setup of the reporting benchmark: every configured table and tenant of ``[start, end)`` into staging."""
    from chat_ingest.config import load_config
    from chat_ingest.operators.a8 import A8ToStagingOperator
    from chat_ingest.operators.botslovers import BotsloversToStagingOperator
    from chat_ingest.operators.ultimate import UltimateToStagingOperator
    from chat_ingest.operators.unless import UnlessToStagingOperator
    from chat_ingest.sources import a8, botslovers

    cfg, window = load_config(), _window(start, end)
    ops = [BotsloversToStagingOperator(task_id="b", tenant=company, table=table, window=window)
           for company in cfg["botslovers"]["companies"] for table in botslovers.TABLES]
    ops += [A8ToStagingOperator(task_id="a", tenant=bot, table=name, window=window)
            for name, spec in a8.TABLES.items() for bot in (cfg["a8"]["bots"] if spec.tenant_column else [None])]
    ops += [UltimateToStagingOperator(task_id="u", tenant=bot, window=window) for bot in cfg["ultimate"]["bots"]]
    ops += [UnlessToStagingOperator(task_id="w", tenant=site, bucket=cfg["unless"]["bucket"],
                                    account=cfg["unless"]["account"], window=window)
            for site in cfg["unless"]["websites"]]
    for op in ops:
        op.execute(_context())
    return len(ops)


def reporting_rebuild(tenant: str, start: dt.date, end: dt.date) -> tuple[int, float]:
    """The reporting DAG's SQL: every source's every day of ``[start, end)`` rebuilt.

    Returns the conversations and the seconds of the rebuilds alone: this benchmark is about how
    the SQL scales with the data, which the interpreter's start-up would blur.
    """
    from chat_ingest.reporting import SOURCES, ensure_reporting_schema, rebuild_day
    from chat_ingest.warehouse import connect

    days = [start + dt.timedelta(days=i) for i in range((end - start).days)]
    with connect() as conn:
        ensure_reporting_schema(conn)
        started = time.perf_counter()
        conversations = sum(rebuild_day(conn, source, day, pii_key="bench-key", run_id=_context()["run_id"])
                            for source in SOURCES for day in days)
        return conversations, time.perf_counter() - started


#: What each kind imports, loaded before its clock starts.  The project's kinds load their operator
#: and the modules its ``execute`` imports (hook, loader): the task runner imports the operator
#: before ``execute`` runs, and the worker that starts a task has Airflow itself loaded already --
#: importing Airflow here is a fixed cost of this process (``import_seconds``), not of the rows.
#: The baselines are given the same head start.
_LOADER = "chat_ingest.staging"
IMPORTS = {
    "botslovers-project": ["chat_ingest.operators.botslovers", "chat_ingest.hooks.clickhouse", _LOADER],
    "botslovers-baseline": ["psycopg", "requests"],
    "a8-project": ["chat_ingest.operators.a8", "airflow.providers.postgres.hooks.postgres", _LOADER],
    "a8-baseline": ["psycopg"],
    "ultimate-project": ["chat_ingest.operators.ultimate", "chat_ingest.hooks.ultimate", _LOADER],
    "ultimate-baseline": ["orjson", "psycopg", "requests"],
    "unless-project": ["chat_ingest.operators.unless", "chat_ingest.hooks.unless", _LOADER],
    "unless-baseline": ["boto3", "bench.volumes"],
}

KINDS = {
    "botslovers-project": botslovers_project, "botslovers-baseline": botslovers_baseline,
    "a8-project": a8_project, "a8-baseline": a8_baseline,
    "ultimate-project": ultimate_project, "ultimate-baseline": ultimate_baseline,
    "unless-project": unless_project, "unless-baseline": unless_baseline,
    "land-all": land_all, "reporting-rebuild": reporting_rebuild,
}


def _peak_rss_mb() -> float:
    """This process's peak resident memory, imports included: Linux's ``VmHWM``, which starts afresh
    with the program (``ru_maxrss`` keeps the high-water mark of the bench process that forked it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=sorted(KINDS))
    p.add_argument("--tenant", default="")
    p.add_argument("--start", type=dt.date.fromisoformat, required=True)
    p.add_argument("--end", type=dt.date.fromisoformat, required=True, help="exclusive")
    a = p.parse_args()
    t0 = time.perf_counter()
    for module in IMPORTS.get(a.kind, ()):
        importlib.import_module(module)
    t1 = time.perf_counter()
    rows = KINDS[a.kind](a.tenant, a.start, a.end)
    seconds = time.perf_counter() - t1  # the path from its call, unless the kind times itself
    if isinstance(rows, tuple):
        rows, seconds = rows
    peak_mb = _peak_rss_mb()
    print(json.dumps({"rows": rows, "seconds": round(seconds, 3), "import_seconds": round(t1 - t0, 3),
                      "peak_rss_mb": round(peak_mb, 1)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
