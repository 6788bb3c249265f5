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
    result = batch.result(landed_straight=True)
    batch.create_changed()
    conn.execute("SELECT set_config('chat_ingest.run_id', %s, true), set_config('chat_ingest.tenant', %s, true)",
                 (batch.run_id, batch.tenant or ""))
    result.rows_extracted, found_ignored = _extract_into_staging(batch, extraction)
    result.ignored_columns += found_ignored
    in_range = batch.in_range(extraction.start, extraction.end)
    # OFFSET 0 keeps the checks below the grouping: the day's rows are grouped as (tenant, day,
    # bad) triples, hashed instead of sorted whole.  The same scan groups them by conversation and
    # day for the days table, if the spec keeps one.
    rows = sql.SQL("SELECT {changes}, {fails} AS bad{conversation} FROM {target} t WHERE {in_range} OFFSET 0").format(
        changes=batch.changes(), fails=fails(batch), target=batch.target, in_range=in_range,
        conversation=conversation_day_items(spec, "t") if spec.days_table else sql.SQL(""))
    with batch.hashing():
        landed, bad = conn.execute(sql.SQL(
            "WITH {grouped}, "
            "good AS (SELECT * FROM landed WHERE n > bad), "
            "noted AS (INSERT INTO _changed {noted}) "
            "SELECT coalesce(sum(n), 0)::bigint, coalesce(sum(bad), 0)::bigint FROM landed"
        ).format(grouped=_grouped_with_conversation_days(batch, rows) if spec.days_table else sql.SQL(
            "landed AS (SELECT tenant, day, last_day, count(*) AS n, count(*) FILTER (WHERE bad) AS bad "
            "FROM ({rows}) r GROUP BY tenant, day, last_day)").format(rows=rows),
                 noted=batch.noted_days("good"))).fetchone()
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


def _grouped_with_conversation_days(batch: Batch, rows: sql.Composable) -> sql.Composed:
    """CTEs over the checking scan (``rows``) that group it once, by tenant, conversation, its day and
    the reporting days the row touches, and read that twice: ``landed`` (tenant, day, last_day: the
    counts and the changed days) and, added to the days table, the (tenant, conversation, day) triples.

    A conversation whose rows are all bad (its id may be what is wrong) gets no days: they are about
    to be quarantined.  One scan of the rows just written instead of two, and one hash table: the
    reporting days are the conversation's day, or a few more for a row with a period, so the groups
    are hardly more than the conversation days (250k of a 3M-row Botslovers day).  ``GROUPING SETS``
    of the two hashed every row twice (0.5-0.7 s more of that day; bench/README.md)."""
    return sql.SQL(
        "grouped AS (SELECT tenant, day, last_day, conversation_id, conversation_day, count(*) AS n, "
        "count(*) FILTER (WHERE bad) AS bad FROM ({rows}) r "
        "GROUP BY tenant, conversation_id, conversation_day, day, last_day), "
        "landed AS (SELECT tenant, day, last_day, sum(n) AS n, sum(bad) AS bad FROM grouped "
        "GROUP BY tenant, day, last_day), "
        "conversation_days AS (SELECT DISTINCT tenant, conversation_id, conversation_day FROM grouped "
        "WHERE n > bad), "
        "kept AS ({keep})"
    ).format(rows=rows, keep=keep_conversation_days(batch.spec, "conversation_days"))
