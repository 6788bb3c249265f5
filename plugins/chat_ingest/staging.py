"""The shared staging loader: COPY a stream of rows, type it, merge it idempotently.

Every source lands through here.  In one transaction the loader

1. takes a per-partition advisory lock (two runs of the same table and tenant
   serialise instead of interleaving),
2. ``COPY``s the rows (CSV or the text format) into a temp table of text columns — the fastest
   way into PostgreSQL, and it cannot fail on a badly typed value,
3. moves every row that does not cast to the spec's types (or misses a required
   value) to ``audit.rejected_records`` with its raw payload and the reason,
4. merges the typed rows into ``staging.<source>_<table>`` by the spec's rule
   (see :class:`~chat_ingest.tablespec.MergeRule`), rewriting only rows that
   changed,
5. records the reporting days whose rows it inserted, updated or deleted in
   ``audit.changed_days`` (what the reporting DAG rebuilds), and
6. records the load in ``audit.load_log``.

Two shortcuts keep the same guarantees (:meth:`StagingLoader.land`): a range staging
holds nothing of yet is copied straight into the staging table and checked there
(steps 2–4 in one pass; whatever COPY refuses sends the range down the path above),
and a range whose source digest equals staging's is not extracted at all.

A crash anywhere rolls everything back: staging shows all of a batch or none.
Several loads may share one outer transaction (a document source lands all its
tables at once): the loader's temp tables are dropped when it is done.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from airflow.sdk.exceptions import AirflowFailException
import psycopg
from psycopg import sql

from chat_ingest.tablespec import (
    EARLIEST_TIMESTAMP, FUTURE_TOLERANCE, MARK_COLUMNS, MAX_VALUE_BYTES, Column, MergeRule, TableSpec,
)
from chat_ingest.warehouse import conversation_day_items, keep_conversation_days, note_conversation_days

log = logging.getLogger(__name__)


def _returning_memory_pool() -> pa.MemoryPool:
    """jemalloc's pool, or the system allocator's where pyarrow was built without it.

    Not Arrow's default, mimalloc: it keeps memory Arrow has freed.  Each COPY encodes its batches
    in a thread of its own (:func:`prefetch`); with mimalloc an Unless day of 20k objects grew
    25-35 MB more resident while it copied, though Arrow never held more than 3 MB at once (its
    peak went from about 228 to 253-263 MB; bench/README.md).  ``ARROW_DEFAULT_MEMORY_POOL``, when
    an operator sets it, is left to decide.
    """
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.system_memory_pool()


if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
    pa.set_memory_pool(_returning_memory_pool())

_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
#: The COPY formats a source may hand over, as COPY spells them (a KeyError for any other).
_COPY_FORMATS = {"csv": "csv", "text": "text"}
#: How much of a value over the size limit a quarantined payload keeps (characters).
QUARANTINE_KEEP_CHARS = 2000


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """Iterate ``items`` in a worker thread, at most ``depth`` items ahead.

    Reading and encoding the source then overlaps writing to the warehouse (Arrow,
    HTTP and psycopg all release the GIL), while memory stays bounded by ``depth``.
    An error in the worker is raised here; stopping early releases the worker.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    worker = threading.Thread(target=work, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


class StraightLandingRefused(Exception):
    """A range cannot be copied straight into staging; the loader lands it through its checked path."""


#: What makes the loader give up copying a range straight into staging and land it the checked way:
#: COPY refusing a value (malformed, missing, a NUL byte, a key landed before or repeated, a value
#: too large for the key's index) or the rows themselves (marked bad, outside the range).
_STRAIGHT_REFUSALS = (StraightLandingRefused, psycopg.errors.DataError, psycopg.errors.IntegrityError,
                      psycopg.errors.ProgramLimitExceeded)


class SchemaDriftError(AirflowFailException):
    """The source no longer delivers a column the spec requires (a retry cannot fix that)."""


def check_source_columns(spec: TableSpec, actual: Iterable[str], where: str) -> tuple[str, ...]:
    """Refuse a source that dropped a column the spec needs; return (and report) columns it added."""
    actual = list(actual)
    missing = [c for c in spec.column_names if c not in actual]
    if missing:
        raise SchemaDriftError(f"{spec.qualified_name}: the source no longer delivers column(s) "
                               f"{', '.join(missing)} ({where}); update the table spec or the source")
    added = tuple(c for c in actual if c not in spec.column_names)
    if added:
        log.warning("%s has column(s) the spec does not know, not landed: %s", where, ", ".join(added))
    return added


#: Integer types whose decimal text is the same in every database (see :class:`Extraction`).
_DIGEST_INTEGER_TYPES = ("smallint", "integer", "bigint")


@dataclass(frozen=True)
class Extraction:
    """How a source reads its rows of ``[start, end)`` on the spec's cursor (this tenant's): a
    table source's query, a document source's spooled table, or rows already in the warehouse.

    Each reader starts a fresh extraction when called; the loader calls at most two (see
    :meth:`StagingLoader.land`):

    * ``copy`` yields bytes in PostgreSQL's COPY format ``copy_format`` (``csv``: NULL an empty
      unquoted field; ``text``), the spec's columns in order: the bytes go from the source into
      the warehouse without being parsed here (ClickHouse's ``TabSeparated``, whose escaping is
      the text format's; A8's own ``COPY … TO STDOUT``): PostgreSQL reads the text format faster;
    * ``arrow`` yields Arrow batches (columns by name, plus ``_pre_reason`` / ``_raw`` for a
      record already known bad); a source offering both has ``arrow`` read for the checked
      path, which can mark what COPY data cannot carry (a NUL byte);
    * ``query`` is a SELECT over tables of the loader's transaction (documents a source copied
      into the warehouse to be projected there: Ultimate's records as ``jsonb``) that yields the
      spec's columns as text, then ``_pre_reason`` / ``_raw``; it is read where it lies.

    ``digest``, for a source that can compute one, returns the number of rows and the sum,
    modulo 2**64, of each row's MD5 (first 8 bytes, big-endian) over its canonical text: its
    columns in spec order joined by ``chr(31)``; text as is, integers in decimal, timestamps as
    ``YYYY-MM-DD HH:MM:SS`` in UTC (whole seconds, as the sources that offer a digest store
    them), NULL as ``chr(30)``.  When staging's rows of the range hash to the same digest, a
    load would change nothing, so the loader skips it.  Anything else (a changed, new or
    quarantined row, a duplicate, a tampered staging row) makes the digests differ and the
    range load in full.  ``digest_exact``: the source is PostgreSQL too and digests with
    :func:`digest_sql` exactly (every column cast to staging's type and hashed by PostgreSQL,
    timestamps to the microsecond), so any column type takes part; the digest may return None
    (not comparable).

    ``ignored_columns``: what the source table has and the spec does not (reported).
    """

    start: dt.datetime
    end: dt.datetime
    copy: Callable[[], Iterable[bytes]] | None = None
    copy_format: str = "csv"
    arrow: Callable[[], Iterable[pa.RecordBatch]] | None = None
    query: sql.Composable | None = None
    digest: Callable[[], tuple[int, int] | None] | None = None
    digest_exact: bool = False
    ignored_columns: tuple[str, ...] = ()


def digestible(spec: TableSpec) -> bool:
    """Whether every column of ``spec`` has a portable canonical text (one a non-PostgreSQL source
    can produce too)."""
    return all(c.pg_type in ("text", "timestamptz", *_DIGEST_INTEGER_TYPES) for c in spec.columns)


def digest_sql(spec: TableSpec, relation: sql.Composable, where: sql.Composable, *, exact: bool) -> sql.Composed:
    """``SELECT count, sum`` of the :class:`Extraction` digest over ``relation``'s rows ``where``: in the
    portable form (timestamps to the second), or ``exact`` (PostgreSQL on both sides).

    Exact, each row is its columns cast to staging's types and hashed by PostgreSQL's own hash of
    each type (``hash_record_extended``, PostgreSQL 14 and later): no value is printed as text, which
    made the text digest three times slower (a 1M-row A8 day: 1.4 s against 0.5 s per side,
    bench/README.md).  Values equal by their type's equality hash alike (a JSON ``1.0`` and
    ``1.00``), so such a change is not reloaded; anything else a load would change is.  These hash
    functions do not change between PostgreSQL versions (hash partitions rely on them); should two
    servers still disagree, the digests differ and the range loads in full: slower, never wrong."""
    if exact:
        row = sql.SQL(", ").join(sql.SQL("({})::{}").format(sql.Identifier(c.name), sql.SQL(c.pg_type))
                                 for c in spec.columns)
        return sql.SQL(
            "SELECT count(*), coalesce(sum(hash_record_extended(ROW({row}), 0)::numeric), 0) FROM {relation} WHERE {where}"
        ).format(row=row, relation=relation, where=where)

    def canonical(col: Column) -> sql.Composable:
        value = sql.Identifier(col.name)
        if col.pg_type == "timestamptz":
            value = sql.SQL("to_char(({})::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')").format(value)
        return sql.SQL("coalesce(({})::text, chr(30))").format(value)

    return sql.SQL(
        "SELECT count(*), coalesce(sum(('x' || left(md5(concat_ws(chr(31), {fields})), 16))::bit(64)::bigint"
        "::numeric), 0) FROM {relation} WHERE {where}"
    ).format(fields=sql.SQL(", ").join(map(canonical, spec.columns)), relation=relation, where=where)


@dataclass
class LoadResult:
    run_id: str
    source: str
    table: str
    tenant: str | None
    window_start: str
    window_end: str
    rows_extracted: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0
    rows_landed: int = 0
    rows_unchanged: int = 0
    rows_deleted: int = 0
    duration_seconds: float = 0.0
    ignored_columns: tuple[str, ...] = ()
    #: The reporting days (ISO dates) this load changed rows of.
    changed_days: tuple[str, ...] = ()
    #: The source's rows were found identical to staging's by their digest, so none were extracted.
    identical_to_staging: bool = False
    #: A range staging did not hold yet was copied straight into the staging table, then checked there.
    landed_straight: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def _value_checks(spec: TableSpec, col: Column, typed: bool) -> list[tuple[sql.Composable, sql.Composable]]:
    """What a value of ``col`` must pass to land: (failing condition, message) pairs, in order.

    The value is raw text, or, when ``typed``, already of the spec's type (a row copied
    straight into staging), which leaves fewer checks.  Evaluated in order, a text value is
    only cast once it is known castable.
    """
    ident = sql.Identifier(col.name)
    text = not typed or col.pg_type == "text"
    checks = []
    if not col.nullable:
        checks.append((sql.SQL("{} IS NULL").format(ident), sql.Literal(f"{col.name}: required value is missing")))
    if col.name in spec.key and text:
        checks.append((sql.SQL("{} = ''").format(ident), sql.Literal(f"{col.name}: empty key")))
    if text:
        checks.append((sql.SQL("octet_length({}) > {}").format(ident, sql.Literal(col.max_bytes)),
                       sql.SQL("{} || octet_length({}) || {}").format(
                           sql.Literal(f"{col.name}: "), ident,
                           sql.Literal(f" bytes, over the limit of {col.max_bytes}"))))
    if not typed and col.pg_type != "text":
        checks.append((sql.SQL("{c} IS NOT NULL AND NOT pg_input_is_valid({c}, {t})").format(
                           c=ident, t=sql.Literal(col.pg_type)),
                       sql.SQL("{} || quote_literal(left({}, 60)) || {}").format(
                           sql.Literal(f"{col.name}: "), ident, sql.Literal(f" is not a valid {col.pg_type}"))))
    if col.pg_type == "timestamptz":
        at = sql.SQL("{}::timestamptz").format(ident)
        utc = sql.SQL("to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')").format(at)
        checks.append((sql.SQL("{} < {}").format(at, sql.Literal(EARLIEST_TIMESTAMP)),
                       sql.SQL("{} || {} || {}").format(sql.Literal(f"{col.name}: "), utc,
                                                        sql.Literal(f" is before {EARLIEST_TIMESTAMP}"))))
        checks.append((sql.SQL("{} > now() + {}::interval").format(at, sql.Literal(FUTURE_TOLERANCE)),
                       sql.SQL("{} || {} || {}").format(sql.Literal(f"{col.name}: "), utc,
                                                        sql.Literal(f" is after the load time plus {FUTURE_TOLERANCE}"))))
    return checks


def _reason_expr(checks: list[tuple[sql.Composable, sql.Composable]]) -> sql.Composable:
    """The message of the first failing check, or NULL when all pass."""
    if not checks:  # a typed, optional value that has no range to respect
        return sql.SQL("NULL")
    return sql.SQL("CASE {} END").format(sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(condition, message) for condition, message in checks))


class StagingLoader:
    """Lands one batch (one table, one tenant, one window) into staging."""

    def __init__(
        self,
        conn,
        spec: TableSpec,
        *,
        run_id: str,
        tenant: str | None,
        window_start: dt.datetime,
        window_end: dt.datetime,
        progress_every_seconds: float = 30.0,
    ) -> None:
        self.conn = conn
        self.spec = spec
        self.run_id = run_id
        self.tenant = tenant
        self.window_start = window_start
        self.window_end = window_end
        self.progress_every_seconds = progress_every_seconds
        #: Source columns the spec does not know, found by the extraction before the load (reported).
        self.source_ignored_columns: tuple[str, ...] = ()
        self.target = sql.Identifier("staging", spec.staging_table)

    # -- public ----------------------------------------------------------------------------------

    def land(self, extraction: Extraction) -> LoadResult:
        """Land a source's rows of a range, the cheapest way that is safe.

        * **Identical**: staging holds rows of the range and the source's digest equals
          theirs: nothing is extracted, every row is logged unchanged.
        * **Straight**: staging holds no row of the range yet (a new day): the rows are
          copied straight into the staging table and checked there in one scan, the bad ones
          moved to quarantine -- one pass over the data instead of four (temp table,
          quarantine, typed dedupe, merge; bench/README.md).  Anything COPY refuses (a
          malformed or missing value, a key landed before or repeated, a record the source
          could not parse, a NUL byte) or a row outside the range rolls the attempt back to
          a savepoint, and the range is extracted again for the checked path.
        * **Checked**: everything else: COPY into a temp table, quarantine, merge by the rule.
        """
        started = time.monotonic()
        with self.conn.transaction():
            self.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.spec.staging_table}:{self.tenant}",)
            )
            self.conn.execute("SET LOCAL work_mem = '128MB'")  # the dedupe sorts a day in memory, not on disk
            self.source_ignored_columns = extraction.ignored_columns
            result = self._cheapest_road(extraction)
            if result.rows_landed and self.spec.days_table and not result.landed_straight:
                self._note_conversation_days(extraction)
            result.duration_seconds = round(time.monotonic() - started, 3)
            self._log(result)
        return result

    def _cheapest_road(self, extraction: Extraction) -> LoadResult:
        """Land ``extraction`` by the first of the roads :meth:`land` lists that applies."""
        if not self._holds_rows(extraction):
            if self._can_land_straight():
                try:
                    with self.conn.transaction():  # a savepoint: a refused attempt leaves nothing behind
                        return self._land_straight(extraction)
                except _STRAIGHT_REFUSALS as exc:
                    log.info("%s [%s]: not landed straight (%s); extracting again for the checked path",
                             self.spec.qualified_name, self.tenant, str(exc).splitlines()[0])
        elif extraction.digest:
            identical = self._identical_rows(extraction)
            if identical is not None:
                return self._result(rows_extracted=identical, rows_unchanged=identical, identical_to_staging=True)
        return self._copy_check_merge(extraction)

    def _result(self, **counts) -> LoadResult:
        """A fresh result, and fresh counters for the attempt that fills it."""
        self.ignored_columns: tuple[str, ...] = self.source_ignored_columns
        self.rows_encoded = 0  # counted by _encoded; a CSV pass-through (A8) reports bytes only
        return LoadResult(
            run_id=self.run_id, source=self.spec.source, table=self.spec.name, tenant=self.tenant,
            window_start=self.window_start.isoformat(), window_end=self.window_end.isoformat(), **counts,
        )

    # -- steps -----------------------------------------------------------------------------------

    def _copy_check_merge(self, extraction: Extraction) -> LoadResult:
        """COPY the batch into a temp table, quarantine what cannot land, merge the rest by the spec's rule."""
        result = self._result()
        self._create_incoming()
        result.rows_extracted = self._extract_into(extraction, straight=False)
        result.ignored_columns = self.ignored_columns
        result.rows_rejected = self._quarantine(typed=False)
        typed = result.rows_extracted - result.rows_rejected
        if self.spec.merge_rule is MergeRule.REPLACE_WINDOW:
            result.rows_deleted = self._delete_window()
            result.rows_landed = self._insert_all()
        elif self.spec.merge_rule is MergeRule.REPLACE_CHILDREN:
            result.rows_deleted, result.rows_landed, result.rows_duplicate = self._replace_children()
            result.rows_unchanged = typed - result.rows_duplicate - result.rows_landed
        else:
            distinct = self._dedupe()
            result.rows_duplicate = typed - distinct
            result.rows_landed = self._upsert()
            result.rows_unchanged = distinct - result.rows_landed
        result.changed_days = self._record_changed_days()
        self.conn.execute("DROP TABLE IF EXISTS _incoming, _batch, _newer, _changed")
        return result

    def _can_land_straight(self) -> bool:
        """Whether staging's own columns can take the rows as the source hands them over: a tenant
        the source does not deliver comes from the load (a column default), so there must be one."""
        return self.spec.merge_rule is not MergeRule.REPLACE_CHILDREN and (
            self.spec.tenant_in_source or not self.spec.tenant_column or self.tenant is not None)

    def _land_straight(self, extraction: Extraction) -> LoadResult:
        """COPY a range staging holds nothing of straight into staging, then check the landed rows.

        The lineage columns (and a tenant the source does not deliver) are filled by the staging
        table's defaults from this transaction's settings (see :func:`~chat_ingest.warehouse.staging_ddl`).
        One scan of the range checks every landed row as the checked path checks a text one (less
        what COPY itself enforces: types and required values), notes the days it changed, and
        proves no row landed outside the range; the bad rows are then moved to quarantine.
        """
        result = self._result(landed_straight=True)
        self._create_changed()
        self.conn.execute("SELECT set_config('chat_ingest.run_id', %s, true), set_config('chat_ingest.tenant', %s, true)",
                          (self.run_id, self.tenant or ""))
        result.rows_extracted = self._extract_into(extraction, straight=True)
        result.ignored_columns = self.ignored_columns
        # OFFSET 0 keeps the checks below the grouping: the day's rows are grouped as (tenant, day,
        # bad) triples instead of being sorted whole (the planner has no statistics for them yet).
        # The same scan groups them by conversation and day for the days table, if the spec keeps one.
        rows = sql.SQL("SELECT {changes}, {fails} AS bad{conversation} FROM {target} t WHERE {in_range} OFFSET 0").format(
            changes=self._changes(), fails=self._fails(), target=self.target,
            in_range=self._in_range(extraction.start, extraction.end),
            conversation=conversation_day_items(self.spec, "t") if self.spec.days_table else sql.SQL(""))
        in_range, bad = self.conn.execute(sql.SQL(
            "WITH {grouped}, "
            "good AS (SELECT * FROM landed WHERE n > bad), "
            "noted AS (INSERT INTO _changed {noted}) "
            "SELECT coalesce(sum(n), 0)::bigint, coalesce(sum(bad), 0)::bigint FROM landed"
        ).format(grouped=self._grouped_with_conversation_days(rows) if self.spec.days_table else sql.SQL(
            "landed AS (SELECT tenant, day, last_day, count(*) AS n, count(*) FILTER (WHERE bad) AS bad "
            "FROM ({rows}) r GROUP BY tenant, day, last_day)").format(rows=rows),
                 noted=self._noted_days("good"))).fetchone()
        if in_range != result.rows_extracted:
            raise StraightLandingRefused(f"{result.rows_extracted - in_range} rows outside "
                                         f"[{extraction.start}, {extraction.end})")
        if bad:
            result.rows_rejected = self._quarantine(typed=True, start=extraction.start, end=extraction.end)
        result.rows_landed = result.rows_extracted - result.rows_rejected
        result.changed_days = self._record_changed_days()
        self.conn.execute("DROP TABLE _changed")
        return result

    def _extract_into(self, extraction: Extraction, straight: bool) -> int:
        """Read the extraction into staging itself (``straight``: the spec's columns, typed there) or
        into ``_incoming`` (text, with the marks of rows known bad); the number of rows read.

        Straight, COPY data is preferred (bytes pass through); checked, Arrow (it can mark what it
        cannot carry).  A query's rows are moved by one INSERT; straight, a row it marks bad
        stops the statement (``audit.refuse_marked_row``), as COPY refuses one.
        """
        columns = list(self.spec.column_names)
        if extraction.query is not None:
            select = sql.SQL(", ").join(
                sql.SQL("q.{c}::{t}").format(c=sql.Identifier(c.name), t=sql.SQL(c.pg_type)) if straight
                else sql.SQL("q.{}").format(sql.Identifier(c.name)) for c in self.spec.columns)
            if straight:
                statement = sql.SQL("INSERT INTO {target} ({cols}) SELECT {select} FROM ({query}) q WHERE CASE "
                                    "WHEN q._pre_reason IS NULL THEN true ELSE audit.refuse_marked_row(q._pre_reason) END")
            else:
                statement = sql.SQL("INSERT INTO _incoming ({cols}, {marks}) SELECT {select}, {marks} FROM ({query}) q")
            return self.conn.execute(statement.format(
                target=self.target, cols=sql.SQL(", ").join(map(sql.Identifier, columns)), select=select,
                query=extraction.query, marks=sql.SQL(", ").join(map(sql.Identifier, MARK_COLUMNS)))).rowcount
        table = self.target if straight else sql.Identifier("_incoming")
        if extraction.copy and (straight or not extraction.arrow):
            return self._copy(extraction.copy(), table, columns, extraction.copy_format)
        return self._copy(self._encoded(extraction.arrow(), straight=straight), table,
                          columns if straight else [*columns, *MARK_COLUMNS])

    def _in_range(self, start: dt.datetime, end: dt.datetime) -> sql.Composed:
        """WHERE condition: this tenant's staging rows whose cursor is in ``[start, end)``."""
        cursor = sql.Identifier(self.spec.cursor)
        condition = sql.SQL("{c} >= {s} AND {c} < {e}").format(c=cursor, s=sql.Literal(start), e=sql.Literal(end))
        if self.spec.tenant_column and self.tenant is not None:
            condition += sql.SQL(" AND {} = {}").format(sql.Identifier(self.spec.tenant_column),
                                                        sql.Literal(self.tenant))
        return condition

    def _grouped_with_conversation_days(self, rows: sql.Composable) -> sql.Composed:
        """CTEs over the straight road's checking scan (``rows``) that group it twice at once: ``landed``
        (tenant, day, last_day: the counts and the changed days) and, added to the days table, the
        (tenant, conversation, day) triples -- one scan of the rows just written instead of two."""
        return sql.SQL(
            "grouped AS (SELECT tenant, day, last_day, conversation_id, conversation_day, count(*) AS n, "
            "count(*) FILTER (WHERE bad) AS bad, GROUPING(conversation_id) AS per_day FROM ({rows}) r "
            "GROUP BY GROUPING SETS ((tenant, day, last_day), (tenant, conversation_id, conversation_day))), "
            "landed AS (SELECT tenant, day, last_day, n, bad FROM grouped WHERE per_day = 1), "
            "conversation_days AS (SELECT * FROM grouped WHERE per_day = 0), "
            "kept AS ({keep})"
        ).format(rows=rows, keep=keep_conversation_days(self.spec, "conversation_days"))

    def _note_conversation_days(self, extraction: Extraction) -> None:
        """Add the (tenant, conversation, day) triples of a range landed by the checked road to the spec's
        days table (the straight road groups them in its checking scan).

        The days table stands in for an index on the conversation column, which every load would
        maintain row by row: such an index, filled in the order of the key, took 7-10 s of a 3M-row
        Botslovers load (bench/README.md); this is an entry per conversation and day.  The planner has
        no statistics for rows just landed (it expects a few dozen) and sorted all of them to find the
        distinct ones, on disk at 3M rows (6.4 s); hashing them takes 2.6 s, so sorting is discouraged
        for this statement (its ORDER BY still sorts the distinct entries).
        """
        sorting = self.conn.execute("SELECT current_setting('enable_sort')").fetchone()[0]
        self.conn.execute("SET LOCAL enable_sort = off")
        self.conn.execute(note_conversation_days(self.spec, self._in_range(extraction.start, extraction.end)))
        self.conn.execute(sql.SQL("SET LOCAL enable_sort = {}").format(sql.Literal(sorting)))

    def _holds_rows(self, extraction: Extraction) -> bool:
        return self.conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {target} WHERE {in_range})").format(
            target=self.target, in_range=self._in_range(extraction.start, extraction.end))).fetchone()[0]

    def _identical_rows(self, extraction: Extraction) -> int | None:
        """How many rows staging and the source both hold for the range, if they are the same rows
        (by their digests); None otherwise.

        The two digests are computed at once: each is a scan of the range on its own server, and
        done in turn they were the whole of an unchanged rerun's time (bench ``a8_rerun``)."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-digest") as pool:
            source_digest = pool.submit(extraction.digest)
            staging_digest = self._staging_digest(extraction)
            if staging_digest[0] and source_digest.result() == staging_digest:
                return staging_digest[0]
        return None

    def _staging_digest(self, extraction: Extraction) -> tuple[int, int]:
        """Staging's rows of the range (this tenant's), digested as :class:`Extraction` says."""
        rows, hash_sum = self.conn.execute(digest_sql(
            self.spec, self.target, self._in_range(extraction.start, extraction.end),
            exact=extraction.digest_exact)).fetchone()
        return rows, int(hash_sum) % (1 << 64)

    def _create_incoming(self) -> None:
        cols = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in self.spec.column_names)
        self.conn.execute(
            sql.SQL("CREATE TEMP TABLE _incoming ({}, {}) ON COMMIT DROP").format(
                cols, sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in MARK_COLUMNS)))
        self._create_changed()

    def _create_changed(self) -> None:
        """The (tenant, day) pairs a load changes, noted by its statements (see :meth:`_record_changed_days`)."""
        self.conn.execute("CREATE TEMP TABLE _changed (tenant text, day date) ON COMMIT DROP")

    #: Reporting days a row's period is noted for at most (a corrupt span must not note years).
    MAX_SPAN_DAYS = 366

    def _changes(self) -> sql.Composed:
        """RETURNING list of a merge statement on target alias ``t``: tenant, and the first and last
        reporting day the row touches (one day, or the days of its period: ``TableSpec.span_column``)."""
        col = self.spec.column(self.spec.reporting_day_column)
        at = sql.Identifier("t", col.name)
        first = last = at
        if self.spec.span_column:
            span = self.spec.column(self.spec.span_column)
            other = sql.Identifier("t", span.name)
            if span.pg_type == "timestamptz":
                last = sql.SQL("coalesce({}, {})").format(other, at)
            else:
                first = sql.SQL("({} - make_interval(secs => coalesce({}, 0)))").format(at, other)
        if col.pg_type == "timestamptz":
            first, last = (sql.SQL("({} AT TIME ZONE 'UTC')::date").format(x) for x in (first, last))
        tenant = sql.Identifier("t", self.spec.tenant_column) if self.spec.tenant_column else sql.Literal(None)
        return sql.SQL("{tenant}::text AS tenant, {first} AS day, {last} AS last_day").format(
            tenant=tenant, first=first, last=last)

    def _noted_days(self, rows: str) -> sql.Composed:
        """Every (tenant, day) the ``rows`` (tenant, day, last_day) touch, to insert into ``_changed``."""
        return sql.SQL(
            "SELECT DISTINCT tenant, d::date FROM {rows}, generate_series(least(day, last_day), "
            "least(greatest(day, last_day), least(day, last_day) + {cap}), interval '1 day') d "
            "WHERE day IS NOT NULL").format(rows=sql.SQL(rows), cap=sql.Literal(self.MAX_SPAN_DAYS))

    def _tracked(self, statement: sql.Composable) -> int:
        """Run a merge statement that ends in ``RETURNING {changes}``, note its days, return its row count."""
        cur = self.conn.execute(sql.SQL(
            "WITH touched AS ({statement}), noted AS (INSERT INTO _changed {noted}) SELECT count(*) FROM touched"
        ).format(statement=statement, noted=self._noted_days("touched")))
        return cur.fetchone()[0]

    def _record_changed_days(self) -> tuple[str, ...]:
        rows = self.conn.execute(
            "INSERT INTO audit.changed_days (run_id, source, table_name, tenant, day) "
            "SELECT DISTINCT %s, %s, %s, tenant, day FROM _changed RETURNING day",
            (self.run_id, self.spec.source, self.spec.name)).fetchall()
        return tuple(sorted({d.isoformat() for (d,) in rows}))

    def _prepare(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch in spec order plus ``_pre_reason`` and ``_raw``.

        A source that could not even parse a record (a truncated JSON line) hands it
        over as a row with ``_pre_reason`` and its raw text in ``_raw``.  A NUL byte,
        which would make COPY fail the whole batch, marks its row the same way (the
        byte escaped so the payload still shows it).  Marked rows are quarantined
        like any other bad row.
        """
        names = batch.schema.names
        reasons = batch.column("_pre_reason") if "_pre_reason" in names else pa.nulls(batch.num_rows, pa.string())
        raw = batch.column("_raw") if "_raw" in names else pa.nulls(batch.num_rows, pa.string())
        raw = pc.replace_substring(raw, "\x00", "\\u0000")  # already marked bad; COPY must still take it
        columns = []
        for name in self.spec.column_names:
            col = batch.column(name)
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                # The check is Arrow's alone; only a batch with a NUL byte builds Arrow values from
                # Python ones below (pa.scalar makes pyarrow import pandas: 35 MB a good day does not pay).
                matches = pc.match_substring(col, "\x00")
                if pc.any(matches).as_py():
                    has_nul = pc.fill_null(matches, False)
                    col = pc.replace_substring(col, "\x00", "\\u0000")
                    msg = pa.scalar(f"{name}: contains a NUL byte")
                    joined = pc.binary_join_element_wise(reasons, msg, "; ")  # null where no reason yet
                    reasons = pc.if_else(has_nul, pc.coalesce(joined, msg), reasons)
            columns.append(col)
        return pa.RecordBatch.from_arrays([*columns, reasons, raw], names=[*self.spec.column_names, *MARK_COLUMNS])

    def _encoded(self, batches: Iterable[pa.RecordBatch], straight: bool = False) -> Iterator[memoryview]:
        """Each batch as COPY CSV bytes, after checking the first batch's columns against the spec.

        ``straight``: the spec's columns only, for a COPY into staging itself, which refuses
        the batch when a row is already marked bad (its reason can only be kept by the checked path).
        """
        checked = False
        for batch in batches:
            if not checked:
                self.ignored_columns += check_source_columns(
                    self.spec, [n for n in batch.schema.names if n not in MARK_COLUMNS],
                    "the extracted batch")
                checked = True
            if batch.num_rows:
                prepared = self._prepare(batch)
                if straight:
                    marked = pc.drop_null(prepared.column("_pre_reason"))
                    if len(marked):
                        raise StraightLandingRefused(f"{len(marked)} rows marked bad, e.g. {marked[0].as_py()}")
                    prepared = prepared.select(list(self.spec.column_names))
                buf = io.BytesIO()
                pa_csv.write_csv(prepared, buf, _CSV_OPTIONS)
                self.rows_encoded += batch.num_rows
                yield buf.getbuffer()

    def _copy(self, encoded: Iterable[bytes], table: sql.Composable, columns: Iterable[str],
              copy_format: str = "csv") -> int:
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
            table, sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(_COPY_FORMATS[copy_format]))
        copied = 0
        copy_started = last_report = time.monotonic()
        with self.conn.cursor() as cur:
            with cur.copy(copy_sql) as copy:
                for data in prefetch(encoded):
                    copy.write(data)
                    copied += len(data)
                    now = time.monotonic()
                    if now - last_report >= self.progress_every_seconds:
                        elapsed = max(now - copy_started, 1e-9)
                        rows = (f"{self.rows_encoded:,} rows so far ({self.rows_encoded / elapsed:,.0f} rows/s), "
                                if self.rows_encoded else "")
                        log.info("%s [%s]: %s%.1f MB copied (%.1f MB/s)", self.spec.qualified_name, self.tenant,
                                 rows, copied / 1e6, copied / 1e6 / elapsed)
                        last_report = now
            return cur.rowcount

    def _checks(self, typed: bool) -> list[list[tuple[sql.Composable, sql.Composable]]]:
        """Every check of a row, per column (see :func:`_value_checks`), plus the window's own."""
        checks = [_value_checks(self.spec, c, typed) for c in self.spec.columns]
        if self.spec.merge_rule is MergeRule.REPLACE_WINDOW:
            # A replaced window must only receive rows inside it, or a rerun could not remove them.
            cursor = sql.Identifier(self.spec.cursor)
            checks.append([(sql.SQL("{valid}NOT ({c}::timestamptz >= {s} AND {c}::timestamptz < {e})").format(
                valid=sql.SQL("") if typed else sql.SQL("pg_input_is_valid({}, 'timestamptz') AND ").format(cursor),
                c=cursor, s=sql.Literal(self.window_start), e=sql.Literal(self.window_end)),
                sql.Literal(f"{self.spec.cursor}: outside the load window"))])
        return checks

    def _reason(self, typed: bool) -> sql.Composable:
        """Why a row cannot land -- a row of ``_incoming`` (text), or, ``typed``, one copied straight
        into staging: NULL for a good row."""
        reasons = [] if typed else [sql.SQL("_pre_reason")]
        reasons += [_reason_expr(checks) for checks in self._checks(typed)]
        return sql.SQL("NULLIF(concat_ws('; ', {}), '')").format(sql.SQL(", ").join(reasons))

    def _fails(self) -> sql.Composable:
        """Whether a row copied straight into staging fails a check: the reasons' conditions alone,
        so the scan of a good day builds no message."""
        conditions = [condition for checks in self._checks(typed=True) for condition, _ in checks]
        return sql.SQL("({}) IS TRUE").format(sql.SQL(" OR ").join(conditions)) if conditions else sql.SQL("false")

    def _quarantine(self, typed: bool, start: dt.datetime | None = None, end: dt.datetime | None = None) -> int:
        """Move every row that cannot land to ``audit.rejected_records``, with its reason: from
        ``_incoming``, or, ``typed``, from this tenant's staging rows of ``[start, end)`` (a range
        just copied straight in).

        One pass evaluates the reason (casts are tried once per value); what stays in
        ``_incoming`` is known good, so the merge only casts.  A value over the size
        limit (``MAX_VALUE_BYTES``) is kept as its first ``QUARANTINE_KEEP_CHARS``
        characters and its size: the audit row shows what was wrong without storing
        a 50 MB text again.
        """
        if typed:
            rows = sql.SQL("{target} i WHERE {in_range} AND").format(target=self.target,
                                                                     in_range=self._in_range(start, end))
            payload = sql.SQL("to_jsonb(i) - '_run_id' - '_loaded_at'")
        else:
            rows = sql.SQL("_incoming i WHERE")
            payload = sql.SQL(  # an unparsed record: its raw text
                "CASE WHEN (i)._raw IS NOT NULL "
                "THEN jsonb_strip_nulls(to_jsonb(i) - '_pre_reason' - '_raw') || jsonb_build_object('raw', (i)._raw) "
                "ELSE to_jsonb(i) - '_pre_reason' - '_raw' END")
        cur = self.conn.execute(
            sql.SQL(
                "WITH bad AS (DELETE FROM {rows} {reason} IS NOT NULL RETURNING i, {reason} AS reason) "
                "INSERT INTO audit.rejected_records (run_id, source, table_name, tenant, payload, reason) "
                "SELECT %(run_id)s, %(source)s, %(table)s, %(tenant)s, "
                "(SELECT coalesce(jsonb_object_agg(key, CASE WHEN jsonb_typeof(value) = 'string' "
                "AND octet_length(value #>> '{{}}') > %(limit)s THEN to_jsonb(left(value #>> '{{}}', %(keep)s) || "
                "' … (' || octet_length(value #>> '{{}}') || ' bytes in all)') ELSE value END), '{{}}') "
                "FROM jsonb_each(p.payload)), reason "
                "FROM bad CROSS JOIN LATERAL (SELECT {payload} AS payload) p"
            ).format(rows=rows, reason=self._reason(typed), payload=payload),
            {"run_id": self.run_id, "source": self.spec.source, "table": self.spec.name, "tenant": self.tenant,
             "keep": QUARANTINE_KEEP_CHARS, "limit": MAX_VALUE_BYTES},
        )
        return cur.rowcount

    def _good_rows(self) -> sql.Composed:
        """The rows left after quarantine, cast to the spec's types."""
        typed = sql.SQL(", ").join(
            sql.SQL("{c}::{t} AS {c}").format(c=sql.Identifier(c.name), t=sql.SQL(c.pg_type))
            for c in self.spec.columns
        )
        return sql.SQL("SELECT {typed} FROM _incoming i").format(typed=typed)

    def _dedupe(self) -> int:
        """Build ``_batch``: typed rows, one per key (the newest version where the rule says so)."""
        key = sql.SQL(", ").join(map(sql.Identifier, self.spec.key))
        order = [sql.SQL("{} DESC").format(sql.Identifier(self.spec.version_column))] \
            if self.spec.merge_rule is MergeRule.UPSERT_NEWEST else []
        # Remaining columns make the pick among exact-key duplicates deterministic.
        order += [sql.Identifier(n) for n in self.spec.column_names if n not in self.spec.key]
        cur = self.conn.execute(sql.SQL(
            "CREATE TEMP TABLE _batch ON COMMIT DROP AS "
            "SELECT DISTINCT ON ({key}) * FROM ({good}) t ORDER BY {key}, {order}"
        ).format(key=key, good=self._good_rows(), order=sql.SQL(", ").join(order)))
        return cur.rowcount

    def _lineage(self) -> tuple[list[sql.Composable], list[sql.Composable]]:
        """The staging table's columns and the matching SELECT list: tenant from context, data, lineage."""
        added = {"_run_id": sql.Literal(self.run_id), "_loaded_at": sql.SQL("now()")}
        if not self.spec.tenant_in_source and self.spec.tenant_column:
            added[self.spec.tenant_column] = sql.Literal(self.tenant)
        columns = self.spec.staging_columns
        return [sql.Identifier(c) for c in columns], [added.get(c, sql.Identifier(c)) for c in columns]

    def _upsert(self) -> int:
        """Update the keys already in staging whose row changed, then insert the new keys.

        Two set-based statements instead of ``INSERT … ON CONFLICT``: its speculative
        insertion costs about a third more on a day of new keys (measured, bench/README.md).
        Safe because the load holds the (table, tenant) lock and the staging key includes
        the tenant: no other load can add these keys in between.
        """
        target, values = self._lineage()
        data = [sql.Identifier(n) for n in self.spec.column_names if n not in self.spec.staging_key]
        value_of = dict(zip(self.spec.staging_columns, values))
        same_key = sql.SQL(" AND ").join(  # a tenant from context is a literal, not a _batch column
            sql.SQL("t.{} = {}").format(sql.Identifier(k), sql.SQL("b.{}").format(sql.Identifier(k))
                                        if k in self.spec.column_names else value_of[k])
            for k in self.spec.staging_key)
        changed = sql.SQL("({old}) IS DISTINCT FROM ({new})").format(
            old=sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in data),
            new=sql.SQL(", ").join(sql.SQL("b.{}").format(c) for c in data),
        )
        if self.spec.merge_rule is MergeRule.UPSERT_NEWEST:
            condition = sql.SQL("(b.{v} > t.{v} OR (b.{v} = t.{v} AND {changed}))").format(
                v=sql.Identifier(self.spec.version_column), changed=changed)
        else:
            condition = changed
        updates = sql.SQL(", ").join(
            [sql.SQL("{c} = b.{c}").format(c=c) for c in data]
            + [sql.SQL("{} = {}").format(sql.Identifier(c), value_of[c]) for c in ("_run_id", "_loaded_at")])
        updated = self._tracked(sql.SQL(
            "UPDATE {target} AS t SET {updates} FROM _batch b WHERE {same_key} AND {condition} RETURNING {changes}"
        ).format(target=self.target, updates=updates, same_key=same_key, condition=condition,
                 changes=self._changes()))
        inserted = self._tracked(sql.SQL(
            "INSERT INTO {target} AS t ({cols}) SELECT {values} FROM _batch b "
            "WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {same_key}) RETURNING {changes}"
        ).format(target=self.target, cols=sql.SQL(", ").join(target),
                 values=sql.SQL(", ").join(values), same_key=same_key, changes=self._changes()))
        return updated + inserted

    def _delete_window(self) -> int:
        return self._tracked(sql.SQL("DELETE FROM {t} AS t WHERE {in_range} RETURNING {changes}").format(
            t=self.target, in_range=self._in_range(self.window_start, self.window_end), changes=self._changes()))

    def _insert_all(self) -> int:
        target, values = self._lineage()
        return self._tracked(sql.SQL(
            "INSERT INTO {target} AS t ({cols}) SELECT {values} FROM ({good}) g RETURNING {changes}"
        ).format(target=self.target, cols=sql.SQL(", ").join(target), values=sql.SQL(", ").join(values),
                 good=self._good_rows(), changes=self._changes()))

    def _replace_children(self) -> tuple[int, int, int]:
        """REPLACE_CHILDREN: swap the rows of every document whose batch version is newer than staging's.

        Returns (rows deleted, rows inserted, rows of older versions of a document in the same batch).
        A document whose version staging already holds (a rerun, an unchanged object read again)
        is left alone.
        """
        parent = [sql.Identifier(c) for c in self.spec.parent_key]
        version = sql.Identifier(self.spec.version_column)
        self.conn.execute(sql.SQL(
            "CREATE TEMP TABLE _batch ON COMMIT DROP AS {good}").format(good=self._good_rows()))
        self.conn.execute(sql.SQL(
            "CREATE TEMP TABLE _newer ON COMMIT DROP AS "
            "SELECT DISTINCT ON ({p}) {p}, {v} FROM _batch b "
            "WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE ({tp}) = ({bp}) AND t.{v} >= b.{v}) "
            "ORDER BY {p}, {v} DESC"
        ).format(p=sql.SQL(", ").join(parent), v=version, target=self.target,
                 tp=sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in parent),
                 bp=sql.SQL(", ").join(sql.SQL("b.{}").format(c) for c in parent)))
        older = self.conn.execute(sql.SQL(
            "SELECT count(*) FROM (SELECT {v} < max({v}) OVER (PARTITION BY {p}) AS older FROM _batch) b "
            "WHERE older"
        ).format(v=version, p=sql.SQL(", ").join(parent))).fetchone()[0]
        deleted = self._tracked(sql.SQL(
            "DELETE FROM {target} t USING _newer n WHERE ({tp}) = ({np}) RETURNING {changes}"
        ).format(target=self.target, changes=self._changes(),
                 tp=sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in parent),
                 np=sql.SQL(", ").join(sql.SQL("n.{}").format(c) for c in parent)))
        target, values = self._lineage()
        inserted = self._tracked(sql.SQL(
            "INSERT INTO {target} AS t ({cols}) SELECT {values} FROM (SELECT b.* FROM _batch b JOIN _newer n "
            "USING ({p}, {v})) g RETURNING {changes}"
        ).format(target=self.target, cols=sql.SQL(", ").join(target), values=sql.SQL(", ").join(values),
                 p=sql.SQL(", ").join(parent), v=version, changes=self._changes()))
        return deleted, inserted, older

    def _log(self, r: LoadResult) -> None:
        self.conn.execute(
            "INSERT INTO audit.load_log (run_id, source, table_name, tenant, window_start, window_end, "
            "rows_extracted, rows_rejected, rows_duplicate, rows_landed, rows_unchanged, rows_deleted, "
            "duration_seconds, ignored_columns) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (r.run_id, r.source, r.table, r.tenant, self.window_start, self.window_end, r.rows_extracted,
             r.rows_rejected, r.rows_duplicate, r.rows_landed, r.rows_unchanged, r.rows_deleted,
             r.duration_seconds, list(r.ignored_columns)),
        )
