"""The checked road, which takes any batch: COPY into a temp table of text columns (the fastest way
into PostgreSQL, and it cannot fail on a badly typed value), quarantine every row that does not
cast to the spec's types or misses a required value, then merge the rest into staging by the spec's
rule (:class:`~chat_ingest.tablespec.MergeRule`), rewriting only rows that changed.

Each rule is one function below: :func:`_upsert` (by key, or the newest version), :func:`_replace_window`
and :func:`_replace_children`.  Every statement that changes staging notes the reporting days it
touched (:meth:`~chat_ingest.landing.batch.Batch.tracked`).
"""

from __future__ import annotations

from psycopg import sql

from chat_ingest.landing.batch import Batch, Extraction, LoadResult
from chat_ingest.landing.checks import quarantine, reason
from chat_ingest.landing.copying import copy_arrow_into, copy_into
from chat_ingest.tablespec import MARK_COLUMNS, MergeRule
from chat_ingest.warehouse import note_conversation_days

#: An unparsed record is quarantined with its raw text; any other row as its columns.
_TEXT_ROW_PAYLOAD = sql.SQL(
    "CASE WHEN (i)._raw IS NOT NULL "
    "THEN jsonb_strip_nulls(to_jsonb(i) - '_pre_reason' - '_raw') || jsonb_build_object('raw', (i)._raw) "
    "ELSE to_jsonb(i) - '_pre_reason' - '_raw' END")


def land_checked(batch: Batch, extraction: Extraction) -> LoadResult:
    """COPY the batch into a temp table, quarantine what cannot land, merge the rest by the spec's rule."""
    spec = batch.spec
    result = batch.result()
    _create_incoming(batch)
    result.rows_extracted, found_ignored = _extract_into_incoming(batch, extraction)
    result.ignored_columns += found_ignored
    result.rows_rejected = quarantine(batch, sql.SQL("_incoming i WHERE"),
                                      reason(batch, typed=False, earlier=(sql.SQL("_pre_reason"),)), _TEXT_ROW_PAYLOAD)
    typed = result.rows_extracted - result.rows_rejected
    if spec.merge_rule is MergeRule.REPLACE_WINDOW:
        result.rows_deleted, result.rows_landed = _replace_window(batch)
    elif spec.merge_rule is MergeRule.REPLACE_CHILDREN:
        result.rows_deleted, result.rows_landed, result.rows_duplicate = _replace_children(batch)
        result.rows_unchanged = typed - result.rows_duplicate - result.rows_landed
    else:
        distinct = _dedupe(batch)
        result.rows_duplicate = typed - distinct
        result.rows_landed = _upsert(batch)
        result.rows_unchanged = distinct - result.rows_landed
    result.changed_days = batch.record_changed_days()
    batch.conn.execute("DROP TABLE IF EXISTS _incoming, _batch, _newer, _changed")
    if result.rows_landed and spec.days_table:
        _note_conversation_days(batch, extraction)
    return result


def _note_conversation_days(batch: Batch, extraction: Extraction) -> None:
    """Add the (tenant, conversation, day) triples of the range to the spec's days table (the straight
    road groups them in its checking scan).

    The days table stands in for an index on the conversation column, which every load would
    maintain row by row: such an index, filled in the order of the key, took 7-10 s of a 3M-row
    Botslovers load (bench/README.md); this is an entry per conversation and day, found by hashing
    the rows just landed (:meth:`~chat_ingest.landing.batch.Batch.hashing`).
    """
    with batch.hashing():
        batch.conn.execute(note_conversation_days(batch.spec, batch.in_range(extraction.start, extraction.end)))


def _create_incoming(batch: Batch) -> None:
    cols = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in batch.spec.column_names)
    batch.conn.execute(
        sql.SQL("CREATE TEMP TABLE _incoming ({}, {}) ON COMMIT DROP").format(
            cols, sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in MARK_COLUMNS)))
    batch.create_changed()


def _extract_into_incoming(batch: Batch, extraction: Extraction) -> tuple[int, tuple[str, ...]]:
    """Read the extraction into ``_incoming`` (text, with the marks of rows known bad): the number of
    rows read, and the columns the rows held that the spec does not know.

    Arrow is preferred (it can mark what COPY data cannot carry: a NUL byte, bytes that are not
    UTF-8), then COPY data; a query's rows are moved by one INSERT.
    """
    columns = list(batch.spec.column_names)
    if extraction.query is not None:
        return batch.conn.execute(sql.SQL(
            "INSERT INTO _incoming ({cols}, {marks}) SELECT {select}, {marks} FROM ({query}) q"
        ).format(cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
                 select=sql.SQL(", ").join(sql.SQL("q.{}").format(sql.Identifier(c)) for c in columns),
                 query=extraction.query, marks=sql.SQL(", ").join(map(sql.Identifier, MARK_COLUMNS)))).rowcount, ()
    incoming = sql.Identifier("_incoming")
    if extraction.copy and not extraction.arrow:
        return copy_into(batch, extraction.copy(), incoming, columns, extraction.copy_format), ()
    return copy_arrow_into(batch, extraction.arrow(), incoming, straight=False)


def _good_rows(batch: Batch) -> sql.Composed:
    """The rows left after quarantine, cast to the spec's types."""
    typed = sql.SQL(", ").join(
        sql.SQL("{c}::{t} AS {c}").format(c=sql.Identifier(c.name), t=sql.SQL(c.pg_type))
        for c in batch.spec.columns
    )
    return sql.SQL("SELECT {typed} FROM _incoming i").format(typed=typed)


def _lineage(batch: Batch) -> tuple[list[sql.Composable], list[sql.Composable]]:
    """The staging table's columns and the matching SELECT list: tenant from context, data, lineage."""
    spec = batch.spec
    added = {"_run_id": sql.Literal(batch.run_id), "_loaded_at": sql.SQL("now()")}
    if not spec.tenant_in_source and spec.tenant_column:
        added[spec.tenant_column] = sql.Literal(batch.tenant)
    columns = spec.staging_columns
    return [sql.Identifier(c) for c in columns], [added.get(c, sql.Identifier(c)) for c in columns]


def _dedupe(batch: Batch) -> int:
    """Build ``_batch``: typed rows, one per key (the newest version where the rule says so)."""
    spec = batch.spec
    key = sql.SQL(", ").join(map(sql.Identifier, spec.key))
    order = [sql.SQL("{} DESC").format(sql.Identifier(spec.version_column))] \
        if spec.merge_rule is MergeRule.UPSERT_NEWEST else []
    # Remaining columns make the pick among exact-key duplicates deterministic.
    order += [sql.Identifier(n) for n in spec.column_names if n not in spec.key]
    cur = batch.conn.execute(sql.SQL(
        "CREATE TEMP TABLE _batch ON COMMIT DROP AS "
        "SELECT DISTINCT ON ({key}) * FROM ({good}) t ORDER BY {key}, {order}"
    ).format(key=key, good=_good_rows(batch), order=sql.SQL(", ").join(order)))
    return cur.rowcount


def _upsert(batch: Batch) -> int:
    """UPSERT_BY_KEY / UPSERT_NEWEST: update the keys already in staging whose row changed (or, newest,
    whose version is newer), then insert the new keys.

    Two set-based statements instead of ``INSERT … ON CONFLICT``: its speculative
    insertion costs about a third more on a day of new keys (measured, bench/README.md).
    Safe because the load holds the (table, tenant) lock and the staging key includes
    the tenant: no other load can add these keys in between.
    """
    spec = batch.spec
    target, values = _lineage(batch)
    data = [sql.Identifier(n) for n in spec.column_names if n not in spec.staging_key]
    value_of = dict(zip(spec.staging_columns, values, strict=True))
    same_key = sql.SQL(" AND ").join(  # a tenant from context is a literal, not a _batch column
        sql.SQL("t.{} = {}").format(sql.Identifier(k), sql.SQL("b.{}").format(sql.Identifier(k))
                                    if k in spec.column_names else value_of[k])
        for k in spec.staging_key)
    changed = sql.SQL("({old}) IS DISTINCT FROM ({new})").format(
        old=sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in data),
        new=sql.SQL(", ").join(sql.SQL("b.{}").format(c) for c in data),
    )
    if spec.merge_rule is MergeRule.UPSERT_NEWEST:
        condition = sql.SQL("(b.{v} > t.{v} OR (b.{v} = t.{v} AND {changed}))").format(
            v=sql.Identifier(spec.version_column), changed=changed)
    else:
        condition = changed
    updates = sql.SQL(", ").join(
        [sql.SQL("{c} = b.{c}").format(c=c) for c in data]
        + [sql.SQL("{} = {}").format(sql.Identifier(c), value_of[c]) for c in ("_run_id", "_loaded_at")])
    updated = batch.tracked(sql.SQL(
        "UPDATE {target} AS t SET {updates} FROM _batch b WHERE {same_key} AND {condition} RETURNING {changes}"
    ).format(target=batch.target, updates=updates, same_key=same_key, condition=condition,
             changes=batch.changes()))
    inserted = batch.tracked(sql.SQL(
        "INSERT INTO {target} AS t ({cols}) SELECT {values} FROM _batch b "
        "WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {same_key}) RETURNING {changes}"
    ).format(target=batch.target, cols=sql.SQL(", ").join(target),
             values=sql.SQL(", ").join(values), same_key=same_key, changes=batch.changes()))
    return updated + inserted


def _replace_window(batch: Batch) -> tuple[int, int]:
    """REPLACE_WINDOW: delete the tenant's rows of the load window, insert the batch (rows deleted, inserted)."""
    deleted = batch.tracked(sql.SQL("DELETE FROM {t} AS t WHERE {in_range} RETURNING {changes}").format(
        t=batch.target, in_range=batch.in_range(batch.window_start, batch.window_end), changes=batch.changes()))
    target, values = _lineage(batch)
    inserted = batch.tracked(sql.SQL(
        "INSERT INTO {target} AS t ({cols}) SELECT {values} FROM ({good}) g RETURNING {changes}"
    ).format(target=batch.target, cols=sql.SQL(", ").join(target), values=sql.SQL(", ").join(values),
             good=_good_rows(batch), changes=batch.changes()))
    return deleted, inserted


def _replace_children(batch: Batch) -> tuple[int, int, int]:
    """REPLACE_CHILDREN: swap the rows of every document whose batch version is newer than staging's.

    Returns (rows deleted, rows inserted, rows of older versions of a document in the same batch).
    A document whose version staging already holds (a rerun, an unchanged object read again)
    is left alone.
    """
    spec, conn = batch.spec, batch.conn
    parent = [sql.Identifier(c) for c in spec.parent_key]
    version = sql.Identifier(spec.version_column)
    conn.execute(sql.SQL("CREATE TEMP TABLE _batch ON COMMIT DROP AS {good}").format(good=_good_rows(batch)))
    conn.execute(sql.SQL(
        "CREATE TEMP TABLE _newer ON COMMIT DROP AS "
        "SELECT DISTINCT ON ({p}) {p}, {v} FROM _batch b "
        "WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE ({tp}) = ({bp}) AND t.{v} >= b.{v}) "
        "ORDER BY {p}, {v} DESC"
    ).format(p=sql.SQL(", ").join(parent), v=version, target=batch.target,
             tp=sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in parent),
             bp=sql.SQL(", ").join(sql.SQL("b.{}").format(c) for c in parent)))
    older = conn.execute(sql.SQL(
        "SELECT count(*) FROM (SELECT {v} < max({v}) OVER (PARTITION BY {p}) AS older FROM _batch) b "
        "WHERE older"
    ).format(v=version, p=sql.SQL(", ").join(parent))).fetchone()[0]
    deleted = batch.tracked(sql.SQL(
        "DELETE FROM {target} t USING _newer n WHERE ({tp}) = ({np}) RETURNING {changes}"
    ).format(target=batch.target, changes=batch.changes(),
             tp=sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in parent),
             np=sql.SQL(", ").join(sql.SQL("n.{}").format(c) for c in parent)))
    target, values = _lineage(batch)
    inserted = batch.tracked(sql.SQL(
        "INSERT INTO {target} AS t ({cols}) SELECT {values} FROM (SELECT b.* FROM _batch b JOIN _newer n "
        "USING ({p}, {v})) g RETURNING {changes}"
    ).format(target=batch.target, cols=sql.SQL(", ").join(target), values=sql.SQL(", ").join(values),
             p=sql.SQL(", ").join(parent), v=version, changes=batch.changes()))
    return deleted, inserted, older
