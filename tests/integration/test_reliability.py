"""Faults, bad input and hostile input against the real sandbox servers (tests/RELIABILITY.md).

Each test injects one thing a production pipeline meets — a killed worker, a cut
stream, a duplicate, a concurrent run, drifted or hostile data, a dead source —
and checks that the warehouse holds all of a load or none of it, never a partial
or doubled day, and never a secret.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from psycopg import sql

from bench.volumes import fill_a8, fill_botslovers, fill_ultimate, fill_unless
from chat_ingest.hooks.clickhouse import UnsafeIdentifierError
from chat_ingest.operators.a8 import A8ToStagingOperator
from chat_ingest.operators.botslovers import BotsloversToStagingOperator
from chat_ingest.operators.ultimate import UltimateToStagingOperator
from chat_ingest.operators.unless import UnlessToStagingOperator
from chat_ingest.sources import a8, botslovers, ultimate, unless
from tests.support.sandbox import REPO, empty_botslovers_company, load_window, staging_checksum

pytestmark = pytest.mark.integration
TODAY = dt.datetime.now(dt.timezone.utc).date()
BIG = "bigco"  # the tenant of the large days (Botslovers company, A8 bot, Ultimate bot, Unless website)


def run_id() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


# -- the large day of each source, landed by the DAG's operator --------------------------------------

def big_day(sandbox) -> dt.date:
    return sandbox.days[-1]


#: The staging table whose content each source's large day is checked on.
CHECKED_TABLE = {"botslovers": botslovers.TABLES["messages"], "a8": a8.TABLES["messages"],
                 "ultimate": ultimate.TABLES["conversations"], "unless": unless.TABLES["logs"]}


@pytest.fixture(scope="module")
def large_days(sandbox):
    """Every source's large day for tenant ``bigco``: 200k Botslovers messages, 200k A8 rows,
    a 20k-conversation Ultimate file, 3,000 Unless objects."""
    day = big_day(sandbox)
    fill_botslovers(sandbox.env, BIG, 200_000, day)
    fill_a8(sandbox.env, BIG, 200_000, day)
    fill_ultimate(sandbox.env, BIG, 20_000, day)
    fill_unless(sandbox.env, sandbox.manifest["unless"]["account"], BIG, 3_000)
    yield sandbox
    # leave the stand-ins as the other suites expect them
    sandbox.clickhouse_admin().command(f"DROP TABLE IF EXISTS messages_{BIG}")
    with psycopg.connect(sandbox.env["AIRFLOW_CONN_A8_TIMESCALE"], autocommit=True) as conn:
        for table in ("messages", "chat_state"):
            conn.execute(f"DELETE FROM {table} WHERE bot_handle = %s", (BIG,))
    (sandbox.dataset / "ultimate" / BIG / f"{day}.json").unlink()
    (sandbox.dataset / "ultimate" / BIG).rmdir()
    s3 = sandbox.s3()
    bucket = sandbox.env["SANDBOX_UNLESS_BUCKET"]
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{sandbox.manifest['unless']['account']}/conversations/{BIG}/")
    for page in pages:
        if page.get("Contents"):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": o["Key"]} for o in page["Contents"]]})


def land_in_child(sandbox, source: str) -> subprocess.Popen:
    """The source's large day landed by the DAG's operator in a child process (the bench's worker)."""
    day = TODAY if source == "unless" else big_day(sandbox)  # Unless selects objects by LastModified: today
    return subprocess.Popen(
        [sys.executable, "-m", "bench.worker", f"{source}-project", "--tenant", BIG, "--start", str(day),
         "--end", str(day + dt.timedelta(days=1))],
        env={**os.environ, "PYTHONPATH": f"{REPO / 'plugins'}{os.pathsep}{REPO}"}, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def load_log(sandbox) -> list[tuple[int, int]]:
    """(rows landed, rows unchanged) of every load since the audit schema was dropped, in order."""
    with sandbox.warehouse() as conn:
        if not conn.execute("SELECT to_regclass('audit.load_log')").fetchone()[0]:
            return []
        return conn.execute("SELECT rows_landed, rows_unchanged FROM audit.load_log ORDER BY load_id").fetchall()


def clean_run_checksum(sandbox, source: str) -> tuple[int, str]:
    """The large day landed into empty staging tables, in this process."""
    with sandbox.warehouse() as conn:
        conn.execute("DROP SCHEMA IF EXISTS staging, audit CASCADE")
    proc = land_in_child(sandbox, source)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
    return staging_checksum(sandbox, CHECKED_TABLE[source], BIG)


# 1. -- kill mid-load ---------------------------------------------------------------------------------

#: A statement of a landing that writes: a COPY into the temp table or straight into staging, a check, a merge.
WRITING = (r"^(COPY \"_incoming\"|COPY \"staging\"|WITH landed|WITH touched|WITH bad|INSERT INTO \"staging\""
           r"|UPDATE \"staging\"|DELETE FROM \"staging\")")


@pytest.mark.parametrize("source", ["botslovers", "a8", "ultimate", "unless"])
def test_a_landing_killed_mid_load_leaves_nothing_and_the_rerun_equals_a_clean_run(large_days, source):
    sandbox = large_days
    clean = clean_run_checksum(sandbox, source)
    assert clean[0] > 0
    with sandbox.warehouse() as conn:
        conn.execute("DROP SCHEMA IF EXISTS staging, audit CASCADE")
    proc = land_in_child(sandbox, source)
    seen = None
    with sandbox.warehouse() as conn:
        deadline = time.monotonic() + 300
        while seen is None and proc.poll() is None and time.monotonic() < deadline:
            seen = conn.execute("SELECT left(query, 40) FROM pg_stat_activity WHERE state = 'active' AND query ~ %s "
                                "LIMIT 1", (WRITING,)).fetchone()
            time.sleep(0.005)
    assert seen is not None, f"the load never reached the warehouse: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    with sandbox.warehouse() as conn:  # the server notices the dead client and rolls its transaction back
        deadline = time.monotonic() + 60
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query ~ %s AND state <> 'idle'",
                           (WRITING,)).fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.1)
    after_kill = staging_checksum(sandbox, CHECKED_TABLE[source], BIG)
    assert after_kill[0] == 0 or after_kill == clean, f"a partial batch is visible: {after_kill[0]} rows"
    assert load_log(sandbox) == [] or after_kill == clean  # no load is logged for what did not land
    rerun = land_in_child(sandbox, source)
    assert rerun.wait(timeout=600) == 0, rerun.stderr.read()[-2000:]
    assert staging_checksum(sandbox, CHECKED_TABLE[source], BIG) == clean


# 2. -- ClickHouse stream cut mid-read ----------------------------------------------------------------

def test_a_clickhouse_stream_cut_mid_read_fails_the_task_commits_nothing_and_the_retry_lands(large_days):
    sandbox = large_days
    with sandbox.warehouse() as conn:
        conn.execute("DROP SCHEMA IF EXISTS staging, audit CASCADE")
    requests.post(sandbox.env["SANDBOX_CLICKHOUSE_URL"] + "/_sandbox/faults", json={"cut_after_chunks": 2},
                  auth=("admin", sandbox.env["SANDBOX_CLICKHOUSE_ADMIN_PASSWORD"]), timeout=10).raise_for_status()
    op = BotsloversToStagingOperator(task_id="t", tenant=BIG, table="messages",
                                     window=load_window(big_day(sandbox)))
    cut = run_id()
    with pytest.raises(Exception) as failure:
        op.execute({"run_id": cut})
    assert "IncompleteRead" in repr(failure.value) or "connection" in str(failure.value).lower(), failure.value
    spec = botslovers.TABLES["messages"]
    assert staging_checksum(sandbox, spec, BIG)[0] == 0  # nothing of the window
    with sandbox.warehouse() as conn:
        assert conn.execute("SELECT count(*) FROM audit.load_log WHERE run_id = %s", (cut,)).fetchone()[0] == 0
    retry = op.execute({"run_id": run_id()})
    assert retry["rows_landed"] == retry["rows_extracted"] == 200_000


# -- a company of the test's own, filled row by row ---------------------------------------------------

EDGE = "edgeco"


@pytest.fixture
def edgeco(sandbox):
    """Empty Botslovers tables of company ``edgeco``; the test inserts exactly the rows it needs."""
    with empty_botslovers_company(sandbox, EDGE) as client:
        yield client


def insert_messages(client, rows: list[dict]) -> None:
    base = {"sender_id": "u1", "sender_type": "user", "channel": "web", "session": "s1", "direction": "inbound",
            "type": "inbound", "text": "hello", "language": "en"}
    body = "\n".join(json.dumps({**base, **r, "created_at": r["created_at"].strftime("%Y-%m-%d %H:%M:%S")})
                     for r in rows)
    client.command(f"INSERT INTO messages_{EDGE} FORMAT JSONEachRow {body}")


def load_edge(day: dt.date, days: int = 1, rid: str | None = None) -> dict:
    op = BotsloversToStagingOperator(task_id="t", tenant=EDGE, table="messages", window=load_window(day, days))
    return op.execute({"run_id": rid or run_id()})


def staged_ids(sandbox) -> list[tuple[str, dt.datetime]]:
    with sandbox.warehouse() as conn:
        return conn.execute("SELECT id, created_at FROM staging.botslovers_messages WHERE company = %s "
                            "ORDER BY created_at, id", (EDGE,)).fetchall()


# 3. / 12. -- duplicates, null keys, the window boundary and midnight --------------------------------

def test_duplicates_empty_keys_and_rows_on_the_boundary_land_once_in_their_day(clean_warehouse, edgeco,
                                                                                  monkeypatch):
    sandbox = clean_warehouse
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: a local time zone must not move a row's day
    monkeypatch.setenv("PGTZ", "America/Adak")  # UTC-10 for the warehouse sessions
    time.tzset()
    day1 = dt.date(2026, 11, 10)
    midnight = dt.datetime(2026, 11, 11, tzinfo=dt.timezone.utc)
    last_second = midnight - dt.timedelta(seconds=1)
    insert_messages(edgeco, [
        {"id": "late-1", "created_at": last_second},
        {"id": "dup-1", "created_at": last_second}, {"id": "dup-1", "created_at": last_second},  # within a batch
        {"id": "", "created_at": last_second},  # an empty key
        *({"id": f"edge-{i}", "created_at": midnight} for i in range(3)),  # share the cursor value at the boundary
    ])
    try:
        first = load_edge(day1)
        second = load_edge(day1 + dt.timedelta(days=1))
        overlapping = load_edge(day1, days=2)  # delivered again across batches
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert (first["rows_extracted"], first["rows_duplicate"], first["rows_rejected"], first["rows_landed"]) == \
        (4, 1, 1, 2)
    assert second["rows_landed"] == 3 and second["changed_days"] == ["2026-11-11"]
    assert overlapping["rows_landed"] == 0 and overlapping["rows_unchanged"] == 5
    assert staged_ids(sandbox) == [("dup-1", last_second), ("late-1", last_second),
                                   ("edge-0", midnight), ("edge-1", midnight), ("edge-2", midnight)]
    with sandbox.warehouse() as conn:
        assert conn.execute("SELECT reason FROM audit.rejected_records WHERE tenant = %s",
                            (EDGE,)).fetchall() == [("id: empty key",), ("id: empty key",)]



def test_a_scheduled_run_lands_what_the_vendor_wrote_late_into_the_day_before_and_leaves_the_rest(
        clean_warehouse, edgeco):
    """A row the vendor writes into day X after X's run (later than ``settle_minutes``) used to wait
    for someone to rerun X by hand.  The next scheduled run rechecks X (``recheck_days``): the late
    row lands, X's other rows keep their lineage, X is noted for the reporting rebuild; the run after
    finds X unchanged and reads nothing of it."""
    from chat_ingest.windows import day_window, resolve_window

    day, next_day = dt.date(2026, 11, 10), dt.date(2026, 11, 11)
    at = lambda d, hour: dt.datetime.combine(d, dt.time(hour), dt.timezone.utc)  # noqa: E731

    def scheduled(d: dt.date, rid: str) -> dict:
        window = resolve_window({}, *day_window(d), run_type="scheduled", recheck_days=1)
        return BotsloversToStagingOperator(task_id="t", tenant=EDGE, table="messages", window=window).execute(
            {"run_id": rid})

    insert_messages(edgeco, [{"id": "x-1", "created_at": at(day, 9)}, {"id": "x-2", "created_at": at(day, 10)}])
    assert scheduled(day, "run-day")["rows_landed"] == 2
    insert_messages(edgeco, [{"id": "x-late", "created_at": at(day, 23)},
                             {"id": "next-1", "created_at": at(next_day, 8)}])
    summary = scheduled(next_day, "run-next")
    [again] = summary["rechecked"]
    assert (summary["window_start"][:10], summary["rows_landed"]) == ("2026-11-11", 1)
    assert (again["window_start"][:10], again["rows_landed"], again["rows_unchanged"]) == ("2026-11-10", 1, 2)
    with clean_warehouse.warehouse() as conn:
        lineage = conn.execute("SELECT id, _run_id FROM staging.botslovers_messages WHERE company = %s ORDER BY id",
                               (EDGE,)).fetchall()
        noted = conn.execute("SELECT DISTINCT day::text FROM audit.changed_days WHERE run_id = 'run-next' "
                             "ORDER BY 1").fetchall()
    assert lineage == [("next-1", "run-next"), ("x-1", "run-day"), ("x-2", "run-day"), ("x-late", "run-next")]
    assert noted == [("2026-11-10",), ("2026-11-11",)]
    [unchanged] = scheduled(dt.date(2026, 11, 12), "run-after")["rechecked"]
    assert unchanged["road"] == "identical" and unchanged["rows_unchanged"] == 1

# 4. -- two runs of the same day at once -------------------------------------------------------------

def test_two_loads_of_the_same_day_at_once_serialise_and_equal_one_run(large_days):
    sandbox = large_days
    clean = clean_run_checksum(sandbox, "botslovers")
    with sandbox.warehouse() as conn:
        conn.execute("DROP SCHEMA IF EXISTS staging, audit CASCADE")
    procs = [land_in_child(sandbox, "botslovers") for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
    assert staging_checksum(sandbox, botslovers.TABLES["messages"], BIG) == clean
    assert load_log(sandbox) == [(200_000, 0), (0, 200_000)]  # the second waited for the first, then found nothing new


# 5. -- schema drift ---------------------------------------------------------------------------------

def test_a_new_source_column_is_reported_and_the_rest_lands(clean_warehouse, edgeco):
    edgeco.command(f"ALTER TABLE messages_{EDGE} ADD COLUMN mood String")
    at = dt.datetime(2026, 11, 10, 9, tzinfo=dt.timezone.utc)
    insert_messages(edgeco, [{"id": "m1", "created_at": at, "mood": "happy"}])
    summary = load_edge(at.date(), rid="run-drift")
    assert summary["rows_landed"] == 1 and summary["ignored_columns"] == ["mood"]
    with clean_warehouse.warehouse() as conn:
        assert conn.execute("SELECT ignored_columns FROM audit.load_log WHERE run_id = 'run-drift'"
                            ).fetchone() == (["mood"],)
    again = load_edge(at.date(), rid="run-drift-again")  # unchanged: found identical, nothing extracted
    assert again["road"] == "identical" and again["ignored_columns"] == ["mood"]
    # as drift, with the rows holding it, in the summary, the load log and the gate's report
    assert summary["drift"] == again["drift"] == {"mood": 1}
    from chat_ingest.validation import load_outcomes
    from chat_ingest.warehouse import connect
    from chat_ingest.windows import day_window

    with connect() as conn:
        [drift] = [o for o in load_outcomes(conn, botslovers.TABLES["messages"], run_id="run-drift",
                                            start=day_window(at.date())[0], end=day_window(at.date())[1],
                                            tenants=[EDGE]) if o.expectation == "undeclared_fields"]
    assert drift.unexpected_values == [{"value": "mood", "count": 1}] and "(not landed)" in drift.describe()


def agent_log_rows(client, rows: list[dict]) -> None:
    def text(v):
        return v.strftime("%Y-%m-%d %H:%M:%S") if isinstance(v, dt.datetime) else v

    at = dt.datetime(2026, 11, 10, 9, tzinfo=dt.timezone.utc)
    base = {"chat_id": "c1", "agent_id": "a1", "joined_at": at, "left_at": None, "event": "agent_joined",
            "response_rating": None, "created_at": at, "updated_at": at, "deleted_at": None}
    body = "\n".join(json.dumps({k: text(v) for k, v in {**base, **r}.items()}) for r in rows)
    client.command(f"INSERT INTO chat_agent_log_{EDGE} FORMAT JSONEachRow {body}")


# 5. / 6. -- a changed column type, timestamps from the future or before 2000 ------------------------------

def test_a_changed_type_and_impossible_timestamps_are_quarantined_with_reasons(clean_warehouse, edgeco):
    edgeco.command(f"ALTER TABLE chat_agent_log_{EDGE} MODIFY COLUMN response_rating Nullable(String)")
    # a time as text: PostgreSQL reads 'now' (and 'today', 'epoch', ...) as a time, so it is marked
    edgeco.command(f"ALTER TABLE chat_agent_log_{EDGE} MODIFY COLUMN deleted_at Nullable(String)")
    agent_log_rows(edgeco, [
        {"id": "ok", "response_rating": "4", "deleted_at": "2026-11-10 09:30:00"},
        {"id": "stars", "response_rating": "five stars"},
        {"id": "future", "joined_at": dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc)},
        {"id": "ancient", "left_at": dt.datetime(1999, 12, 31, 23, 59, tzinfo=dt.timezone.utc)},
        {"id": "said-now", "deleted_at": "now"},
    ])
    op = BotsloversToStagingOperator(task_id="t", tenant=EDGE, table="chat_agent_log",
                                     window=load_window(dt.date(2026, 11, 10)))
    summary = op.execute({"run_id": "run-types"})
    assert (summary["rows_landed"], summary["rows_rejected"]) == (1, 4)
    with clean_warehouse.warehouse() as conn:
        reasons = dict(conn.execute("SELECT payload->>'id', reason FROM audit.rejected_records "
                                    "WHERE run_id = 'run-types'").fetchall())
        landed = conn.execute("SELECT id, deleted_at FROM staging.botslovers_chat_agent_log").fetchall()
    assert reasons == {
        "stars": "response_rating: 'five stars' is not a valid smallint",
        "future": "joined_at: 2099-01-01 00:00:00 is after the load time plus 1 day",
        "ancient": "left_at: 1999-12-31 23:59:00 is before 2000-01-01",
        "said-now": "deleted_at: 'now (no date in it)' is not a valid timestamptz",
    }
    assert landed == [("ok", dt.datetime(2026, 11, 10, 9, 30, tzinfo=dt.timezone.utc))]


#: Each Botslovers table as a real ClickHouse may type it (the seed documents ``String`` and
#: ``DateTime``): enums, ``LowCardinality``, ``UUID`` ids, ``DateTime64`` and unsigned integers; two rows
#: each, then the column one of them has changed.
VENDOR_TYPED = {
    "messages": (
        "sender_id String, sender_type LowCardinality(String), id UUID, created_at DateTime64(3, 'UTC'), "
        "channel LowCardinality(String), session String, direction Enum8('inbound' = 1, 'outbound' = 2), "
        "type Enum8('inbound' = 1, 'outbound' = 2), text String, language LowCardinality(Nullable(String))",
        "('u1', 'user', '00000000-0000-4000-8000-000000000001', '2026-11-10 09:30:00.125', 'web', 's1', 'inbound', "
        "'inbound', 'hi', NULL), ('b1', 'bot', '00000000-0000-4000-8000-000000000002', '2026-11-10 09:31:00', "
        "'whatsapp', 's1', 'outbound', 'outbound', '', 'en')",
        "text = 'changed'",
        [("u1", "user", "00000000-0000-4000-8000-000000000001", "2026-11-10 09:30:00.125+00", "web", "s1", "inbound",
          "inbound", "hi", None),
         ("b1", "bot", "00000000-0000-4000-8000-000000000002", "2026-11-10 09:31:00+00", "whatsapp", "s1", "outbound",
          "outbound", "changed", "en")]),
    "chat_agent_log": (
        "id UUID, chat_id String, agent_id LowCardinality(String), joined_at DateTime('UTC'), "
        "left_at Nullable(DateTime64(6, 'UTC')), event Enum8('agent_joined' = 4, 'resolved' = 7), "
        "response_rating Nullable(UInt8), created_at DateTime, updated_at DateTime('UTC'), "
        "deleted_at Nullable(DateTime)",
        "('00000000-0000-4000-8000-000000000001', 'c1', 'a1', '2026-11-10 09:00:00', '2026-11-10 09:05:00.000001', "
        "'resolved', 5, '2026-11-10 09:00:00', '2026-11-10 09:05:00', NULL), "
        "('00000000-0000-4000-8000-000000000002', 'c2', 'a1', '2026-11-10 10:00:00', NULL, 'agent_joined', NULL, "
        "'2026-11-10 10:00:00', '2026-11-10 10:00:00', NULL)",
        "response_rating = 4",
        [("00000000-0000-4000-8000-000000000001", "c1", "a1", "2026-11-10 09:00:00+00", "2026-11-10 09:05:00.000001+00",
          "resolved", "5", "2026-11-10 09:00:00+00", "2026-11-10 09:05:00+00", None),
         ("00000000-0000-4000-8000-000000000002", "c2", "a1", "2026-11-10 10:00:00+00", None, "agent_joined", "4",
          "2026-11-10 10:00:00+00", "2026-11-10 10:00:00+00", None)]),
    "agent_status_logs": (
        "id UUID, agent_id LowCardinality(String), old_status Enum8('offline' = 0, 'online' = 1, 'break' = 2), "
        "new_status Enum8('offline' = 0, 'online' = 1, 'break' = 2), status_changed_at DateTime('UTC'), "
        "duration_seconds Nullable(UInt32), created_at DateTime",
        "('00000000-0000-4000-8000-000000000001', 'a1', 'offline', 'online', '2026-11-10 08:00:00', NULL, "
        "'2026-11-10 08:00:00'), ('00000000-0000-4000-8000-000000000002', 'a1', 'online', 'break', "
        "'2026-11-10 12:00:00', 14400, '2026-11-10 12:00:00')",
        "duration_seconds = 14401",
        [("00000000-0000-4000-8000-000000000001", "a1", "offline", "online", "2026-11-10 08:00:00+00", None,
          "2026-11-10 08:00:00+00"),
         ("00000000-0000-4000-8000-000000000002", "a1", "online", "break", "2026-11-10 12:00:00+00", "14401",
          "2026-11-10 12:00:00+00")]),
}


@pytest.mark.parametrize("table", VENDOR_TYPED)
def test_column_types_a_real_clickhouse_may_use_land_the_same_values_by_both_roads(clean_warehouse, edgeco, table):
    """The straight road reads a day as TabSeparated, the checked road as Arrow: whatever the company's
    table types a column as, both must land the text ClickHouse prints.  Arrow handed an ``Enum8`` over
    as its number, so a changed day landed ``direction = '1'`` over the straight road's ``inbound``
    (and a ``UUID`` as 16 raw bytes).  The day lands straight, then one row changes at the source and
    the checked road lands that row alone, every other value as the straight road landed it."""
    spec = botslovers.TABLES[table]
    ddl, rows, change, expected = VENDOR_TYPED[table]
    source_table = f"{table}_{EDGE}"
    edgeco.command(f"DROP TABLE {source_table}")
    edgeco.command(f"CREATE TABLE {source_table} ({ddl}) ENGINE = MergeTree ORDER BY tuple()")
    edgeco.command(f"INSERT INTO {source_table} VALUES {rows}")
    day = dt.date(2026, 11, 10)

    def land() -> dict:
        op = BotsloversToStagingOperator(task_id="t", tenant=EDGE, table=table, window=load_window(day))
        return op.execute({"run_id": run_id()})

    def staged() -> list[tuple]:
        with clean_warehouse.warehouse() as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            return conn.execute(sql.SQL("SELECT {} FROM {} WHERE company = %s ORDER BY id").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in spec.column_names),
                sql.Identifier("staging", spec.staging_table)), (EDGE,)).fetchall()

    first = land()
    assert (first["road"] == "straight", first["rows_landed"], first["rows_rejected"]) == (True, 2, 0)
    edgeco.command(f"ALTER TABLE {source_table} UPDATE {change} WHERE id = '00000000-0000-4000-8000-000000000002' "
                   "SETTINGS mutations_sync = 1")
    changed = land()
    assert (changed["road"] == "straight", changed["rows_landed"], changed["rows_unchanged"],
            changed["rows_rejected"]) == (False, 1, 1, 0)
    assert staged() == expected
    again = land()
    assert (again["rows_landed"], again["rows_deleted"], again["rows_rejected"]) == (0, 0, 0)
    # the rerun reads nothing: both digests render a DateTime64's fraction alike (…:00.125, …:31:00)
    assert again["road"] == "identical"


# 6. -- bad payloads ---------------------------------------------------------------------------------

def test_a_50_mb_message_text_is_quarantined_with_its_size_and_a_short_payload(clean_warehouse, edgeco):
    at = dt.datetime(2026, 11, 10, 9, tzinfo=dt.timezone.utc)
    insert_messages(edgeco, [{"id": "small", "created_at": at}])
    edgeco.command(f"INSERT INTO messages_{EDGE} (id, created_at, sender_type, text) "
                   "SELECT 'huge', toDateTime('2026-11-10 10:00:00', 'UTC'), 'user', repeat(repeat('x', 1000000), 50)")
    summary = load_edge(at.date(), rid="run-huge")
    assert (summary["rows_landed"], summary["rows_rejected"]) == (1, 1)
    with clean_warehouse.warehouse() as conn:
        reason, payload_bytes = conn.execute(
            "SELECT reason, octet_length(payload::text) FROM audit.rejected_records WHERE run_id = 'run-huge'"
        ).fetchone()
    assert reason == "text: 50000000 bytes, over the limit of 8388608"
    assert payload_bytes < 10_000  # the audit row keeps the start of the value and its size, not 50 MB


def test_a_key_or_conversation_too_large_for_an_index_entry_is_quarantined_not_the_whole_day(clean_warehouse, edgeco):
    """An id or a session of 9,000 bytes is far under the value limit (8 MiB) but over what one B-tree
    entry holds (2,704 bytes): it used to fail the whole day's load ("index row requires 9024 bytes"),
    on the staging key (COPY refused, then the checked road's merge) or on the days table's key (the
    straight road's scan).  Each row is quarantined with its reason instead, by the limit of a keyed
    value (``KEY_VALUE_MAX_BYTES``); the day's other rows land by the road they would take, and a rerun
    changes nothing."""
    import secrets

    long_id_day, long_session_day = dt.date(2026, 11, 10), dt.date(2026, 11, 12)
    at = {day: dt.datetime.combine(day, dt.time(9), dt.timezone.utc) for day in (long_id_day, long_session_day)}
    long_id, long_session = secrets.token_hex(4500), secrets.token_hex(4500)  # incompressible: no TOAST rescue
    insert_messages(edgeco, [{"id": "i-1", "created_at": at[long_id_day]},
                             {"id": long_id, "created_at": at[long_id_day]},
                             {"id": "c-1", "created_at": at[long_session_day], "session": "ok"},
                             {"id": "c-2", "created_at": at[long_session_day], "session": long_session}])
    by_id, by_session = load_edge(long_id_day, rid="run-long-id"), load_edge(long_session_day, rid="run-long-session")
    assert [(s["rows_landed"], s["rows_rejected"], s["road"] == "straight") for s in (by_id, by_session)] == [
        (1, 1, False), (1, 1, True)]
    with clean_warehouse.warehouse() as conn:
        rejected = conn.execute("SELECT run_id, reason, payload->>'id' FROM audit.rejected_records "
                                "WHERE run_id LIKE 'run-long-%' ORDER BY run_id").fetchall()
        days = conn.execute("SELECT conversation_id, day FROM staging.botslovers_messages_days WHERE tenant = %s "
                            "ORDER BY 1, 2", (EDGE,)).fetchall()
    assert rejected == [("run-long-id", "id: 9000 bytes, over the limit of 1024", long_id),
                        ("run-long-session", "session: 9000 bytes, over the limit of 1024", "c-2")]
    assert [i for i, _ in staged_ids(clean_warehouse)] == ["i-1", "c-1"]
    assert days == [("ok", long_session_day), ("s1", long_id_day)]
    for day in (long_id_day, long_session_day):
        again = load_edge(day)
        assert (again["rows_landed"], again["rows_deleted"]) == (0, 0)


#: Every character a COPY format escapes or quotes, and look-alikes of its markers.
def test_the_grouping_statements_hash_in_memory_and_the_session_gets_its_settings_back(sandbox):
    """``Batch.hashing``: inside it, no sort and at least ``HASH_WORK_MEM`` of work_mem (a larger one
    configured is kept); after it, the transaction's own settings, whatever they were."""
    from chat_ingest.landing.batch import Batch

    def settings(conn) -> tuple[str, str]:
        return conn.execute("SELECT current_setting('enable_sort'), current_setting('work_mem')").fetchone()

    day = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    with psycopg.connect(sandbox.warehouse_dsn) as conn:
        batch = Batch(conn, botslovers.MESSAGES, run_id="hashing", tenant="acme", window_start=day,
                      window_end=day + dt.timedelta(days=1))
        assert Batch.HASH_WORK_MEM == "64MB"
        for sorting, configured, inside in (("on", "1MB", "64MB"), ("off", "256MB", "256MB")):
            conn.execute(f"SET LOCAL work_mem = '{configured}'")
            conn.execute(f"SET LOCAL enable_sort = {sorting}")
            with batch.hashing():
                assert settings(conn) == ("off", inside)
            assert settings(conn) == (sorting, configured)
        conn.rollback()


ESCAPES = "tab\there\nnew line\r\"double\" 'single' back\\slash \\N \\0 ,;| \x08\x0c\x0b é 😀"


def test_a_new_day_lands_straight_and_what_copy_refuses_lands_through_the_checked_path(clean_warehouse, edgeco):
    """A day staging holds nothing of is copied straight into staging and checked there (an empty key
    is quarantined from it); a day with a value COPY refuses (a NUL byte) is rolled back to the
    savepoint and landed the checked way; both end as a checked load would, and a rerun of either
    rewrites nothing."""
    straight_day, refused_day = dt.date(2026, 11, 10), dt.date(2026, 11, 11)
    at = {day: dt.datetime.combine(day, dt.time(9), dt.timezone.utc) for day in (straight_day, refused_day)}
    insert_messages(edgeco, [{"id": "s-1", "created_at": at[straight_day]},
                             {"id": "s-2", "created_at": at[straight_day], "text": ESCAPES},
                             {"id": "", "created_at": at[straight_day]},
                             {"id": "r-1", "created_at": at[refused_day]},
                             {"id": "r-2", "created_at": at[refused_day], "text": "nul \x00 byte"}])
    straight = load_edge(straight_day, rid="run-straight")
    refused = load_edge(refused_day, rid="run-refused")
    assert straight["road"] == "straight" and refused["road"] == "checked"
    counts = [(s["rows_extracted"], s["rows_landed"], s["rows_rejected"]) for s in (straight, refused)]
    assert counts == [(3, 2, 1), (2, 1, 1)]
    with clean_warehouse.warehouse() as conn:
        rejected = conn.execute("SELECT run_id, reason, payload->>'id' FROM audit.rejected_records "
                                "WHERE run_id IN ('run-straight', 'run-refused') ORDER BY run_id").fetchall()
        lineage = conn.execute("SELECT DISTINCT _run_id, company FROM staging.botslovers_messages "
                               "WHERE company = %s ORDER BY 1", (EDGE,)).fetchall()
        changed = conn.execute("SELECT run_id, day FROM audit.changed_days WHERE run_id IN ('run-straight', "
                               "'run-refused') ORDER BY run_id").fetchall()
        text_of = conn.execute("SELECT text FROM staging.botslovers_messages WHERE id = 's-2'").fetchone()[0]
    assert rejected == [("run-refused", "text: contains a NUL byte", "r-2"), ("run-straight", "id: empty key", "")]
    assert [i for i, _ in staged_ids(clean_warehouse)] == ["s-1", "s-2", "r-1"]
    assert text_of == ESCAPES  # ClickHouse's escaping read back by COPY's text format, byte for byte
    assert lineage == [("run-refused", EDGE), ("run-straight", EDGE)]  # the staging defaults filled them
    assert changed == [("run-refused", refused_day), ("run-straight", straight_day)]
    for day in (straight_day, refused_day):
        again = load_edge(day)
        assert (again["rows_landed"], again["rows_deleted"], again["road"] == "straight") == (0, 0, False)


def test_clickhouse_strings_that_are_not_utf8_are_quarantined_with_the_byte_and_the_rest_of_the_day_lands(
        clean_warehouse, edgeco):
    """A ClickHouse ``String`` is bytes, not text: a message whose text (or id) is not UTF-8, which the
    warehouse cannot store, is quarantined with the bad byte and its position, shown escaped in the
    payload; COPY's refusal of the straight road rolls back to the checked one, and the day's good
    rows land.  A rerun rewrites nothing."""
    day = dt.date(2026, 11, 12)
    insert_messages(edgeco, [{"id": "u-1", "created_at": dt.datetime.combine(day, dt.time(9), dt.timezone.utc)}])
    columns = "sender_id, sender_type, id, created_at, channel, session, direction, type, text, language"
    for message_id, text, at in (("'latin1'", "unhex('65737061f16f6c')", "09:30:00"),  # 'espa\xf1ol'
                                 ("unhex('6964ff')", "'fine'", "09:40:00")):
        edgeco.command(f"INSERT INTO messages_{EDGE} ({columns}) SELECT 'u1', 'user', {message_id}, "
                       f"toDateTime('{day} {at}', 'UTC'), 'web', 's1', 'inbound', 'inbound', {text}, 'en'")
    summary = load_edge(day, rid="run-bytes")
    assert (summary["rows_extracted"], summary["rows_landed"], summary["rows_rejected"],
            summary["road"] == "straight") == (3, 1, 2, False)
    with clean_warehouse.warehouse() as conn:
        rejected = conn.execute("SELECT reason, payload->>'id', payload->>'text' FROM audit.rejected_records "
                                "WHERE run_id = 'run-bytes' ORDER BY 1").fetchall()
    assert rejected == [("id: not valid UTF-8: byte 0xff at position 2", "id\\xff", "fine"),
                        ("text: not valid UTF-8: byte 0xf1 at position 4", "latin1", "espa\\xf1ol")]
    assert [i for i, _ in staged_ids(clean_warehouse)] == ["u-1"]
    again = load_edge(day)
    assert (again["rows_landed"], again["rows_deleted"], again["rows_rejected"]) == (0, 0, 2)


def test_malformed_empty_invalid_utf8_and_future_ultimate_records_are_quarantined(clean_warehouse):
    sandbox = clean_warehouse
    day = sandbox.days[0]
    good = {"conversation_id": "good", "bot_id": "ult-edge", "conversation_start_time": f"{day}T10:00:00Z",
            "conversation_end_time": f"{day}T10:05:00Z", "triggered_intent_replies": []}
    lines = [json.dumps(good).encode(),
             json.dumps({**good, "conversation_id": "future", "conversation_start_time": "2099-01-01T00:00:00Z",
                         "conversation_end_time": "2099-01-01T00:01:00Z"}).encode(),
             b"{}",
             b'{"conversation_id": "latin1", "bot_id": "ult-edge", "language": "espa\xf1ol"}',
             b'{"conversation_id": "truncated", "bot_id": "ult-ed']
    folder = sandbox.dataset / "ultimate" / "ult-edge"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{day}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    try:
        op = UltimateToStagingOperator(task_id="t", tenant="ult-edge", window=load_window(day))
        summary = op.execute({"run_id": "run-bad-ult"})["conversations"]
    finally:
        (folder / f"{day}.jsonl").unlink()
        folder.rmdir()
    assert (summary["rows_extracted"], summary["rows_landed"], summary["rows_rejected"]) == (5, 1, 4)
    with sandbox.warehouse() as conn:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM audit.rejected_records WHERE run_id = 'run-bad-ult' "
                                              "ORDER BY rejected_id")]
    assert len(reasons) == 4
    assert any("2099-01-01" in r and "after the load time" in r for r in reasons), reasons
    assert any("conversation_id: required value is missing" in r for r in reasons), reasons
    assert any("UTF-8" in r for r in reasons), reasons
    assert any("not valid JSON" in r or "truncated" in r.lower() for r in reasons), reasons


# 7. -- HTTP faults past the timeout --------------------------------------------------------------------

def test_slow_responses_past_the_timeout_are_retried_a_bounded_number_of_times_then_fail(sandbox, faults):
    from chat_ingest.hooks.ultimate import UltimateExportHook

    faults({"target": "signed-urls", "delay_seconds": 2, "status": 200, "times": 3})
    hook = UltimateExportHook(max_attempts=3, backoff_seconds=0.05, timeout=(2.0, 0.5))
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="timed out.*gave up after 3 attempts"):
        hook.get_signed_urls(sandbox.days[0], "ult-bank")
    assert faults.remaining() == 0  # exactly three attempts
    assert time.monotonic() - started < 30


# 8. -- hostile names ------------------------------------------------------------------------------------

HOSTILE = ["acme'; DROP TABLE staging.botslovers_messages; --", "../../etc/passwd", "acme\u0430", "a b", "acme\n",
           "web-shop/../web-help", ""]


def operator_for(source: str, tenant: str):
    w = load_window(dt.date(2026, 11, 10))
    return {
        "botslovers": lambda: BotsloversToStagingOperator(task_id="t", tenant=tenant, table="messages", window=w),
        "a8": lambda: A8ToStagingOperator(task_id="t", tenant=tenant, table="messages", window=w),
        "ultimate": lambda: UltimateToStagingOperator(task_id="t", tenant=tenant, window=w),
        "unless": lambda: UnlessToStagingOperator(task_id="t", tenant=tenant, window=w, bucket="b", account="acct"),
    }[source]()


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("source", ["botslovers", "a8", "ultimate", "unless"])
def test_a_hostile_tenant_name_is_refused_before_any_connection(source, name, monkeypatch):
    dead = "postgresql://nobody:x@127.0.0.1:9/none"  # any I/O would fail with a connection error instead
    for conn_id in ("CHAT_WAREHOUSE", "A8_TIMESCALE"):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", dead)
    monkeypatch.setenv("AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE", json.dumps({"conn_type": "clickhouse", "host": "127.0.0.1",
                                                                         "port": 9}))
    monkeypatch.setenv("AIRFLOW_CONN_ULTIMATE_EXPORT", json.dumps({"conn_type": "ultimate_export",
                                                                   "host": "127.0.0.1", "port": 9}))
    monkeypatch.setenv("AIRFLOW_CONN_UNLESS_S3", json.dumps({"conn_type": "aws",
                                                             "extra": {"endpoint_url": "http://127.0.0.1:9"}}))
    with pytest.raises(UnsafeIdentifierError, match="^refusing (company|bot|website) "):
        operator_for(source, name).execute({"run_id": run_id()})


def test_sql_and_markup_in_the_data_land_verbatim_and_run_nowhere(clean_warehouse, edgeco):
    at = dt.datetime(2026, 11, 10, 9, tzinfo=dt.timezone.utc)
    hostile = "Robert'); DROP TABLE staging.botslovers_messages; -- <script>alert(1)</script> {{ 7*7 }} %s"
    insert_messages(edgeco, [{"id": "x'; DELETE FROM audit.load_log; --", "created_at": at, "text": hostile}])
    load_edge(at.date())
    with clean_warehouse.warehouse() as conn:
        assert conn.execute("SELECT id, text FROM staging.botslovers_messages WHERE company = %s",
                            (EDGE,)).fetchall() == [("x'; DELETE FROM audit.load_log; --", hostile)]
        assert conn.execute("SELECT count(*) FROM audit.load_log").fetchone()[0] == 1


# 11. -- empty and unreachable sources -------------------------------------------------------------------

def test_an_empty_source_lands_as_empty_and_says_so(clean_warehouse, capfd):
    sandbox = clean_warehouse
    op = UnlessToStagingOperator(task_id="t", tenant="web-nobody", window=load_window(TODAY),
                                 bucket=sandbox.env["SANDBOX_UNLESS_BUCKET"],
                                 account=sandbox.manifest["unless"]["account"])
    summary = op.execute({"run_id": "run-empty-source"})
    assert summary["conversations"]["rows_extracted"] == summary["logs"]["rows_extracted"] == 0
    assert capfd.readouterr().out.count("the source had no rows for this window") == 2  # the task log says so
    with sandbox.warehouse() as conn:
        assert conn.execute("SELECT count(*) FROM audit.load_log WHERE run_id = 'run-empty-source'"
                            ).fetchone()[0] == 2


def test_an_unreachable_source_fails_clearly_and_the_others_still_land(clean_warehouse, monkeypatch):
    sandbox = clean_warehouse
    conn = json.loads(sandbox.env["AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE"])
    monkeypatch.setenv("AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE", json.dumps({**conn, "port": 9}))
    day = sandbox.days[0]
    with pytest.raises(Exception, match="(?i)connection refused|failed to establish|max retries") as failure:
        BotsloversToStagingOperator(task_id="t", tenant="acme", table="messages", window=load_window(day)).execute(
            {"run_id": run_id()})
    assert conn["password"] not in str(failure.value)
    landed = A8ToStagingOperator(task_id="t", tenant=sandbox.manifest["a8"]["bots"][0], table="messages",
                                 window=load_window(day)).execute({"run_id": run_id()})
    assert landed["rows_landed"] > 0


# 9. -- secrets ------------------------------------------------------------------------------------------

def secrets_of(env: dict[str, str]) -> dict[str, str]:
    """Every password, token and key the sandbox's connections hold."""
    conn = {name: json.loads(env[f"AIRFLOW_CONN_{name}"]) for name in
            ("BOTSLOVERS_CLICKHOUSE", "ULTIMATE_EXPORT", "UNLESS_S3", "REPORTING_PII")}
    warehouse = psycopg.conninfo.conninfo_to_dict(env["CHAT_INGEST_WAREHOUSE_DSN"])
    return {"clickhouse password": conn["BOTSLOVERS_CLICKHOUSE"]["password"],
            "ultimate token": conn["ULTIMATE_EXPORT"]["password"],
            "s3 secret key": conn["UNLESS_S3"]["password"], "s3 access key": conn["UNLESS_S3"]["login"],
            "reporting hmac key": conn["REPORTING_PII"]["password"], "warehouse password": warehouse["password"]}


def test_no_secret_reaches_task_logs_xcom_rendered_fields_or_audit(clean_warehouse, airflow, tmp_path):
    sandbox = clean_warehouse
    cli_log = tmp_path / "airflow.log"
    # Every DAG and its assets written once first, as a dag-processor does: four `dags test` writing
    # them at once raced on the asset table's unique key (one run never started: UniqueViolation).
    airflow.run("dags", "reserialize", log=cli_log)
    with ThreadPoolExecutor(4) as runs:  # the four sources' runs side by side, as the scheduler runs them
        list(runs.map(lambda dag_id: airflow.trigger_day(dag_id, sandbox.days[1], cli_log),
                      ("botslovers_ingest", "a8_ingest", "ultimate_ingest", "unless_ingest")))
    airflow.trigger("reporting", {}, cli_log)
    places = {"airflow CLI output": cli_log.read_text(errors="replace")}
    for path in (sandbox.root / "airflow" / "logs").rglob("*"):
        if path.is_file():
            places[f"task log {path.name}"] = path.read_text(errors="replace")
    with psycopg.connect(airflow.metadata_dsn) as conn:
        for table in ("xcom", "rendered_task_instance_fields", "dag_run", "task_instance", "log"):
            places[f"metadata {table}"] = "\n".join(r for (r,) in conn.execute(f"SELECT t::text FROM {table} t"))
    with sandbox.warehouse() as conn:
        for (table,) in conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'audit'"):
            places[f"audit.{table}"] = "\n".join(r for (r,) in conn.execute(f"SELECT t::text FROM audit.{table} t"))
    assert any("staging.botslovers_messages" in text for text in places.values())  # the logs were read
    assert places["metadata xcom"]  # the summaries were pushed
    leaks = [(what, where) for what, secret in secrets_of(sandbox.env).items()
             for where, text in places.items() if secret and secret in text]
    assert leaks == []


def test_tasks_starting_together_on_a_new_warehouse_apply_the_schema_once_and_never_deadlock(clean_warehouse):
    """The first runs of every DAG at once (make demo on a fresh sandbox): each task ensures the schema,
    then writes.  The DDL is one unit: one task applies it, the others wait for it and take no lock
    (DDL re-run beside a writer deadlocked: ALTER TABLE and CREATE INDEX lock even when nothing changes)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from chat_ingest.warehouse import connect, ensure_schema

    tasks = 8
    together = threading.Barrier(tasks)

    def task(i: int) -> None:
        with connect() as conn:
            together.wait(timeout=120)
            ensure_schema(conn)
            with conn.transaction():
                conn.execute("INSERT INTO audit.reporting_builds (run_id, source, day, conversations, "
                             "duration_seconds) VALUES (%s, 'a8', current_date, 0, 0)", (f"together-{i}",))
                conn.execute("SELECT count(*) FROM staging.botslovers_messages").fetchone()

    with ThreadPoolExecutor(tasks) as pool:
        list(pool.map(task, range(tasks)))  # any deadlock or lock timeout raises here
    with clean_warehouse.warehouse() as conn:
        applied = conn.execute("SELECT count(*) FROM audit.schema_applied").fetchone()[0]
        written = conn.execute("SELECT count(*) FROM audit.reporting_builds WHERE run_id LIKE 'together-%'"
                               ).fetchone()[0]
    assert (applied, written) == (1, tasks)
