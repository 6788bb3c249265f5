"""The straight road: a range staging holds nothing of yet (a new day, the common case) is copied
straight into the staging table and checked there, in one scan, instead of four passes (temp
table, quarantine, typed dedupe, merge; bench/README.md).

Whatever the road cannot take raises one of :data:`REFUSALS`; the loader then rolls the attempt
back to its savepoint and lands the range by the checked road.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from chat_ingest.landing.batch import Batch, Extraction, LoadResult, StraightLandingRefused
from chat_ingest.landing.checks import fails, quarantine, reason
from chat_ingest.landing.copying import copy_arrow_into, copy_into
from chat_ingest.tablespec import MergeRule
from chat_ingest.warehouse import conversation_day_items, keep_conversation_days

#: What makes the loader give up copying a range straight into staging and land it the checked way:
#: COPY refusing a value (malformed, missing, a NUL byte or bytes that are not UTF-8, a key landed
#: before or repeated, a value too large for the key's index) or the rows themselves (marked bad,
#: outside the range).
REFUSALS = (StraightLandingRefused, psycopg.errors.DataError, psycopg.errors.IntegrityError,
            psycopg.errors.ProgramLimitExceeded)


def can_land_straight(batch: Batch) -> bool:
    """Whether staging's own columns can take the rows as the source hands them over: a tenant
    the source does not deliver comes from the load (a column default), so there must be one."""
    spec = batch.spec
    return spec.merge_rule is not MergeRule.REPLACE_CHILDREN and (
        spec.tenant_in_source or not spec.tenant_column or batch.tenant is not None)


def land_straight(batch: Batch, extraction: Extraction) -> LoadResult:
    """COPY a range staging holds nothing of straight into staging, then check the landed rows.

    The lineage columns (and a tenant the source does not deliver) are filled by the staging
    table's defaults from this transaction's settings (see :func:`~chat_ingest.warehouse.staging_ddl`).
    One scan of the range checks every landed row as the checked road checks a text one (less
    what COPY itself enforces: types and required values), notes the days it changed, and
    proves no row landed outside the range; the bad rows are then moved to quarantine.
    """
    conn, spec = batch.conn, batch.spec
    result = batch.result(road="straight")
    batch.create_changed()
    conn.execute("SELECT set_config('chat_ingest.run_id', %s, true), set_config('chat_ingest.tenant', %s, true)",
                 (batch.run_id, batch.tenant or ""))
    result.rows_extracted, found_ignored = _extract_into_staging(batch, extraction)
    result.ignored_columns += found_ignored
    in_range = batch.in_range(extraction.start, extraction.end)
    with batch.hashing():
        _group_landed_rows(batch, in_range)
        landed, bad = conn.execute(sql.SQL(
            "WITH landed AS (SELECT tenant, day, last_day, sum(n) AS n, sum(bad) AS bad FROM _landed "
            "GROUP BY tenant, day, last_day), {conversation_days}"
            "good AS (SELECT * FROM landed WHERE n > bad), "
            "noted AS (INSERT INTO _changed {noted}) "
            "SELECT coalesce(sum(n), 0)::bigint, coalesce(sum(bad), 0)::bigint FROM landed"
        ).format(conversation_days=_conversation_days(spec) if spec.days_table else sql.SQL(""),
                 noted=batch.noted_days("good"))).fetchone()
    conn.execute("DROP TABLE _landed")
    if landed != result.rows_extracted:
        raise StraightLandingRefused(f"{result.rows_extracted - landed} rows outside "
                                     f"[{extraction.start}, {extraction.end})")
    if bad:
        result.rows_rejected = quarantine(
            batch, sql.SQL("{target} i WHERE {in_range} AND").format(target=batch.target, in_range=in_range),
            reason(batch, typed=True), sql.SQL("to_jsonb(i) - '_run_id' - '_loaded_at'"))
    result.rows_landed = result.rows_extracted - result.rows_rejected
    result.changed_days = batch.record_changed_days()
    conn.execute("DROP TABLE _changed")
    return result


def _extract_into_staging(batch: Batch, extraction: Extraction) -> tuple[int, tuple[str, ...]]:
    """Read the extraction into staging itself, the spec's columns typed there: the number of rows
    read, and the columns the rows held that the spec does not know.

    COPY data is preferred (bytes pass through), then Arrow.  A query's rows are moved by one
    INSERT, and a row it marks bad stops the statement (``audit.refuse_marked_row``), as COPY
    refuses one.
    """
    spec = batch.spec
    columns = list(spec.column_names)
    if extraction.query is not None:
        select = sql.SQL(", ").join(sql.SQL("q.{c}::{t}").format(c=sql.Identifier(c.name), t=sql.SQL(c.pg_type))
                                    for c in spec.columns)
        return batch.conn.execute(sql.SQL(
            "INSERT INTO {target} ({cols}) SELECT {select} FROM ({query}) q WHERE CASE "
            "WHEN q._pre_reason IS NULL THEN true ELSE audit.refuse_marked_row(q._pre_reason) END"
        ).format(target=batch.target, cols=sql.SQL(", ").join(map(sql.Identifier, columns)), select=select,
                 query=extraction.query)).rowcount, ()
    if extraction.copy:
        return copy_into(batch, extraction.copy(), batch.target, columns, extraction.copy_format), ()
    return copy_arrow_into(batch, extraction.arrow(), batch.target, straight=True)


def _group_landed_rows(batch: Batch, in_range: sql.Composable) -> None:
    """The checking scan: every row of the range just landed, checked and grouped into the temp
    table ``_landed`` as (tenant, day, last_day) with its row and bad-row counts, by conversation
    and its day too if the spec keeps a days table.

    A statement of its own, a read into a new table, so PostgreSQL may scan with parallel workers
    (the INSERTs of the statement that reads it would forbid them): a 3M-row Botslovers day's scan
    took 3.3-4.2 s in one process and 2.0-2.2 s with two workers (bench/README.md).  ``OFFSET 0``
    keeps the checks below the grouping, so the rows are grouped as hashed triples, not sorted
    whole.  A conversation's rows are counted together, so one whose rows are all bad (its id may
    be what is wrong) can be left out of the days table: they are about to be quarantined."""
    spec = batch.spec
    grouping = sql.SQL("tenant, day, last_day{}").format(
        sql.SQL(", conversation_id, conversation_day") if spec.days_table else sql.SQL(""))
    rows = sql.SQL("SELECT {changes}, {fails} AS bad{conversation} FROM {target} t WHERE {in_range} OFFSET 0").format(
        changes=batch.changes(), fails=fails(batch), target=batch.target, in_range=in_range,
        conversation=conversation_day_items(spec, "t") if spec.days_table else sql.SQL(""))
    batch.conn.execute(sql.SQL(
        "CREATE TEMP TABLE _landed ON COMMIT DROP AS SELECT {grouping}, count(*) AS n, "
        "count(*) FILTER (WHERE bad) AS bad FROM ({rows}) r GROUP BY {grouping}"
    ).format(grouping=grouping, rows=rows))


def _conversation_days(spec) -> sql.Composed:
    """CTEs adding the (tenant, conversation, day) triples of ``_landed`` with a good row to the
    spec's days table: the reporting days are the conversation's day, or a few more for a row with
    a period, so ``_landed`` holds hardly more groups than conversation days (250k of a 3M-row
    Botslovers day)."""
    return sql.SQL(
        "conversation_days AS (SELECT DISTINCT tenant, conversation_id, conversation_day FROM _landed "
        "WHERE n > bad), kept AS ({keep}), "
    ).format(keep=keep_conversation_days(spec, "conversation_days"))
