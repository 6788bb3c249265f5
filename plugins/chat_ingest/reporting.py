"""The reporting layer: rebuild exactly the (source, day) partitions that loads changed.

Every load records the UTC days whose staging rows it inserted, updated or
deleted (``audit.changed_days``).  A build takes the pending changes, widens each
day by a day before and after it (see :func:`pending_changes`), and rebuilds each (source, day) of
every ``reporting`` table in one transaction with the SQL in
``include/sql/reporting/``: the conversations of that source that *started*
that day, their masked messages, the day's KPIs.  A rebuild is a delete and an
insert of the same partition, so a rerun changes nothing.

An agent participation without an end lasts until its source's data ends, so its days are not the
days of its rows: each build also notes the days that participations opened, closed or extended since
the previous build (:func:`note_open_participation_days`), so days loaded in any order report the same.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Iterable

from chat_ingest.warehouse import REPORTING_SQL
from chat_ingest.windows import window_days

log = logging.getLogger(__name__)

SOURCES = ("botslovers", "a8", "ultimate", "unless")
#: The reporting tables and the column that names a row's day.
PARTITION_COLUMNS = {
    "conversations": "conversation_date", "messages": "conversation_date", "daily_bot_kpis": "conversation_date",
    "intent_metrics": "conversation_date", "agent_daily_kpis": "activity_date", "agent_status_daily": "status_date",
}
#: A day's rebuild after its conversations (``conversations_{source}``), in order; a step without a
#: file for the source is not part of its rebuild.
STEPS = ("messages_{source}", "daily_bot_kpis", "intent_metrics", "agent_daily_kpis_{source}",
         "agent_status_daily_{source}")
DEFAULT_EXCLUDED_INTENTS = ("Greeting", "Talk to a human/agent")


def ensure_reporting_schema(conn) -> None:
    """The warehouse schema (staging too, so a source that never landed reads as empty), and the
    vocabulary mapping of this deployment's sources.yaml."""
    from chat_ingest import vocabulary
    from chat_ingest.warehouse import ensure_schema

    ensure_schema(conn)
    with conn.transaction():
        vocabulary.write_table(conn)


def report_lineage(source: str) -> None:
    """OpenLineage of a rebuild: the source's staging tables in, every reporting table out."""
    from chat_ingest.lineage import report_sql_lineage
    from chat_ingest.sources import TABLES_BY_SOURCE

    report_sql_lineage(inputs=[("staging", spec.staging_table) for spec in TABLES_BY_SOURCE[source].values()],
                       outputs=[("reporting", table) for table in PARTITION_COLUMNS])


def hmac_settings(key: str) -> dict[str, str]:
    """The transaction settings ``reporting.user_key()`` reads: the key (hex) for pgcrypto's hmac(),
    and its HMAC-SHA256 inner and outer pads (hex) for servers without pgcrypto, where SQL finishes
    the HMAC with sha256().  Which one a server uses is decided by ddl.sql."""
    if not key:
        raise ValueError("the reporting HMAC key is empty (the password of connection reporting_pii)")
    raw = key.encode()
    block = hashlib.sha256(raw).digest() if len(raw) > 64 else raw
    block = block.ljust(64, b"\0")
    return {"chat_ingest.hmac_key": raw.hex(),
            "chat_ingest.hmac_inner": bytes(b ^ 0x36 for b in block).hex(),
            "chat_ingest.hmac_outer": bytes(b ^ 0x5C for b in block).hex()}


def pending_changes(conn, lookback_days: int = 1, lookahead_days: int = 1
                    ) -> tuple[list[int], list[tuple[str, dt.date]]]:
    """Unconsumed change ids, and the (source, day) partitions they call for: each changed day, the
    day before it (a conversation that began the evening before has messages on the changed day) and
    the day after it (an A8 agent activity or chat state lasts until the next one: a row landed on day
    X, say by a backfill after X+1 was reported, changes the interval that runs into X+1, and a
    handoff on X changes the first response an agent gives on X+1)."""
    rows = conn.execute(
        "SELECT change_id, source, day FROM audit.changed_days WHERE consumed_at IS NULL ORDER BY change_id"
    ).fetchall()
    partitions = {(source, day + dt.timedelta(days=shift)) for _, source, day in rows
                  for shift in range(-lookback_days, lookahead_days + 1)}
    return [r[0] for r in rows], sorted(partitions)


def note_open_participation_days(conn, run_id: str) -> None:
    """Note as changed the days of every participation that opened, closed or reached further since the
    last build (``open_participation_days.sql``), and log how many each source got.

    A participation without an end lasts until its source's data ends (``reporting.loaded_until``), so
    a day's agent KPIs depend on rows of other days: a backfill landing an open participation below
    days already reported reaches into all of them, a later row closing it takes it out of them, and a
    load of a later day, even an empty one, extends it.  Comparing what is open now with what was open
    at the last build finds exactly those days, in any order of loads, without rebuilding every later
    day of every backfilled one."""
    from psycopg import sql

    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('reporting:open_participations'))")
        for source in SOURCES:
            query = REPORTING_SQL / f"open_participations_{source}.sql"
            if not query.exists():
                continue
            conn.execute(sql.SQL(
                "CREATE TEMP TABLE open_now ON COMMIT DROP AS SELECT tenant, participation_id, began, "
                "greatest(began, reporting.loaded_until(%(source)s)) AS reached_until "
                "FROM ({query}) o (tenant, participation_id, began)").format(query=sql.SQL(query.read_text())),
                {"source": source})
            days = conn.execute((REPORTING_SQL / "open_participation_days.sql").read_text(),
                                {"source": source, "run_id": run_id}).fetchall()
            conn.execute("DELETE FROM audit.open_participations WHERE source = %s", (source,))
            conn.execute("INSERT INTO audit.open_participations SELECT %s, * FROM open_now", (source,))
            conn.execute("DROP TABLE open_now")
            if days:
                log.info("reporting %s: %d day(s) whose open participations changed", source, len(days))


def plan_build(conn, requested: tuple[dt.datetime, dt.datetime] | None = None, run_id: str = "reporting"
               ) -> tuple[list[int], list[tuple[str, dt.date]]]:
    """Ensure the schemas; note the days open participations changed; the pending change ids, and the
    partitions they call for plus, when a ``[start, end)`` range is requested, every source's days in it."""
    ensure_reporting_schema(conn)
    note_open_participation_days(conn, run_id)
    change_ids, partitions = pending_changes(conn)
    if requested:
        start, end = requested
        days = window_days(start, end)
        partitions = sorted({*partitions, *((source, day) for source in SOURCES for day in days)})
    return change_ids, partitions


#: The steps (and tables) that read only ``reporting.conversations`` of their day: a day that loses a
#: conversation to another day's rebuild runs them again.
CONVERSATION_KPI_STEPS = ("daily_bot_kpis", "intent_metrics")


def rebuild_day(conn, source: str, day: dt.date, *, pii_key: str, run_id: str,
                excluded_intents: Iterable[str] = DEFAULT_EXCLUDED_INTENTS) -> int:
    """Replace one source's day in every reporting table, in one transaction; returns its conversations.

    A conversation is in exactly one day, the day it started, and that day can move: an earlier
    message arrives (days loaded backwards, a backfill after the schedule), a rewritten Unless object
    gains an earlier item.  So the day's conversations are computed into a temp table first; any of
    them reporting holds under another day is taken out of that day (with its messages), and that
    day's conversation KPIs are computed again, in this same transaction.  A source's days are
    rebuilt one at a time (an advisory lock per source), so two rebuilds never move the same
    conversation at once.
    """
    from psycopg import sql

    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    started = time.monotonic()
    secret_settings = hmac_settings(pii_key)
    excluded = list(excluded_intents)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"reporting:{source}",))
        for name, value in secret_settings.items():
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        for table, column in PARTITION_COLUMNS.items():
            conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s AND {} = %s").format(
                sql.Identifier("reporting", table), sql.Identifier(column)), (source, day))
        conn.execute("CREATE TEMP TABLE day_conversations (LIKE reporting.conversations) ON COMMIT DROP")
        day_tables = copy_day_conversation_rows(conn, source, day)
        _run_step(conn, f"conversations_{source}", source, day, excluded)
        moved_from = _take_moved_conversations(conn)
        for step in STEPS:
            _run_step(conn, step.format(source=source), source, day, excluded)
        for other_day in moved_from:
            for step in CONVERSATION_KPI_STEPS:
                conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s AND conversation_date = %s").format(
                    sql.Identifier("reporting", step)), (source, other_day))
                _run_step(conn, step, source, other_day, excluded)
        conversations = conn.execute("SELECT count(*) FROM day_conversations").fetchone()[0]
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.SQL(", ").join(
            map(sql.Identifier, ["day_conversations", *day_tables]))))
        conn.execute(
            "INSERT INTO audit.reporting_builds (run_id, source, day, conversations, duration_seconds) "
            "VALUES (%s, %s, %s, %s, %s)", (run_id, source, day, conversations, time.monotonic() - started))
    log.info("reporting %s %s: %d conversations rebuilt in %.1fs%s", source, day, conversations,
             time.monotonic() - started,
             f"; conversations that now start that day were moved from {', '.join(map(str, moved_from))}"
             if moved_from else "")
    return conversations


def copy_day_conversation_rows(conn, source: str, day: dt.date) -> list[str]:
    """Copy the rows of the conversations with a row on ``day`` -- all of them, whatever day they are
    on -- from each of the source's staging tables that keeps conversation days
    (``TableSpec.conversation_column``) into a temp table ``day_<staging table>`` indexed by
    conversation, which the day's SQL steps read; returns the temp tables' names (``day_conversation_keys``,
    the conversations, first).

    These tables have no per-row index on the conversation (every load would maintain it: it took
    7-10 s of a 3M-row load, bench/README.md).  The conversations' days are read from the days table
    instead, and their rows from those days only, through the window index: the days are turned into
    literal ranges per tenant, so the planner sees each range a block range index can select.
    """
    from psycopg import sql

    from chat_ingest.sources import TABLES_BY_SOURCE

    specs = [spec for spec in TABLES_BY_SOURCE[source].values() if spec.days_table]
    if not specs:
        return []
    start = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
    conn.execute(sql.SQL("CREATE TEMP TABLE day_conversation_keys ON COMMIT DROP AS {}").format(
        sql.SQL(" UNION ").join(sql.SQL(
            "SELECT {tenant}::text AS tenant, {conversation}::text AS conversation_id FROM {table} "
            "WHERE {cursor} >= %(start)s AND {cursor} < %(end)s AND {conversation} IS NOT NULL").format(
                tenant=sql.Identifier(spec.tenant_column), conversation=sql.Identifier(spec.conversation_column),
                table=sql.Identifier("staging", spec.staging_table), cursor=sql.Identifier(spec.cursor))
            for spec in specs)), {"start": start, "end": start + dt.timedelta(days=1)})
    conn.execute("ANALYZE day_conversation_keys")
    names = ["day_conversation_keys"]
    for spec in specs:
        tenant, conversation = sql.Identifier(spec.tenant_column), sql.Identifier(spec.conversation_column)
        days = conn.execute(sql.SQL(
            "SELECT DISTINCT d.tenant, d.day FROM day_conversation_keys k JOIN {days} d "
            "ON d.conversation_id = k.conversation_id AND d.tenant = k.tenant ORDER BY 1, 2").format(
                days=sql.Identifier("staging", spec.days_table))).fetchall()
        ranges = [sql.SQL("({tenant} = {t} AND {cursor} >= {s} AND {cursor} < {e})").format(
            tenant=tenant, cursor=sql.Identifier(spec.cursor), t=sql.Literal(t), s=sql.Literal(s), e=sql.Literal(e))
            for t, s, e in _day_ranges(days)] or [sql.SQL("false")]
        name = f"day_{spec.staging_table}"
        conn.execute(sql.SQL(
            "CREATE TEMP TABLE {name} ON COMMIT DROP AS SELECT m.* FROM {table} m WHERE ({ranges}) "
            "AND EXISTS (SELECT FROM day_conversation_keys k WHERE k.tenant = m.{tenant} "
            "AND k.conversation_id = m.{conversation})").format(
                name=sql.Identifier(name), table=sql.Identifier("staging", spec.staging_table),
                ranges=sql.SQL(" OR ").join(ranges), tenant=tenant, conversation=conversation))
        conn.execute(sql.SQL("CREATE INDEX ON {} ({}, {})").format(sql.Identifier(name), conversation, tenant))
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(name)))
        names.append(name)
    return names


def _day_ranges(days: Iterable[tuple[str, dt.date]]) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """(tenant, start, end) UTC ranges covering the (tenant, day) pairs, in order, consecutive days merged."""
    ranges: list[list] = []
    for tenant, day in days:
        start = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
        if ranges and ranges[-1][0] == tenant and ranges[-1][2] == start:
            ranges[-1][2] = start + dt.timedelta(days=1)
        else:
            ranges.append([tenant, start, start + dt.timedelta(days=1)])
    return [tuple(r) for r in ranges]


def _run_step(conn, step: str, source: str, day: dt.date, excluded_intents: list[str]) -> None:
    """Run one SQL step for (source, day), if the source has that step."""
    path = REPORTING_SQL / f"{step}.sql"
    if path.exists():
        start = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
        conn.execute(path.read_text(), {"source": source, "day": day, "day_start": start,
                                        "day_end": start + dt.timedelta(days=1), "excluded_intents": excluded_intents})


def _take_moved_conversations(conn) -> list[dt.date]:
    """Move ``day_conversations`` into ``reporting.conversations``, first taking any of them reporting
    holds under another day out of it (with their messages); returns those other days."""
    moved = conn.execute(
        "WITH moved AS (DELETE FROM reporting.conversations r USING day_conversations d "
        "WHERE r.source = d.source AND r.tenant = d.tenant AND r.conversation_id = d.conversation_id "
        "RETURNING r.source, r.tenant, r.conversation_id, r.conversation_date), "
        "messages AS (DELETE FROM reporting.messages m USING moved WHERE m.source = moved.source "
        "AND m.tenant = moved.tenant AND m.conversation_id = moved.conversation_id) "
        "SELECT DISTINCT conversation_date FROM moved ORDER BY 1").fetchall()
    conn.execute("INSERT INTO reporting.conversations SELECT * FROM day_conversations")
    return [d for (d,) in moved]


def mark_consumed(conn, change_ids: list[int]) -> int:
    """Close a build: its changes are consumed and ``reporting.source_freshness`` is refreshed."""
    with conn.transaction():
        cur = conn.execute("UPDATE audit.changed_days SET consumed_at = now() WHERE change_id = ANY(%s) "
                           "AND consumed_at IS NULL", (change_ids,))
        conn.execute((REPORTING_SQL / "source_freshness.sql").read_text())
    return cur.rowcount
