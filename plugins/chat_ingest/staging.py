"""The shared staging loader: COPY a stream of Arrow batches, type it, merge it idempotently.

Every source lands through here.  In one transaction the loader

1. takes a per-partition advisory lock (two runs of the same table and tenant
   serialise instead of interleaving),
2. ``COPY``s the batches as CSV into a temp table of text columns — the fastest
   way into PostgreSQL, and it cannot fail on a badly typed value,
3. moves every row that does not cast to the spec's types (or misses a required
   value) to ``audit.rejected_records`` with its raw payload and the reason,
4. merges the typed rows into ``staging.<source>_<table>`` by the spec's rule
   (see :class:`~chat_ingest.tablespec.MergeRule`), rewriting only rows that
   changed,
5. records the reporting days whose rows it inserted, updated or deleted in
   ``audit.changed_days`` (what the reporting DAG rebuilds), and
6. records the load in ``audit.load_log``.

A crash anywhere rolls everything back: staging shows all of a batch or none.
Several loads may share one outer transaction (a document source lands all its
tables at once): the loader's temp tables are dropped when it is done.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from airflow.sdk.exceptions import AirflowFailException
from psycopg import sql

from chat_ingest.tablespec import (
    EARLIEST_TIMESTAMP, FUTURE_TOLERANCE, MAX_VALUE_BYTES, Column, MergeRule, TableSpec,
)

log = logging.getLogger(__name__)

_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
#: How much of a value over the size limit a quarantined payload keeps (characters).
QUARANTINE_KEEP_CHARS = 2000
#: Columns a batch may carry beside the spec's: why a row is already known bad, and its raw text.
MARK_COLUMNS = ("_pre_reason", "_raw")


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


#: Integer types whose decimal text is the same in every database (see :class:`SourceDigest`).
_DIGEST_INTEGER_TYPES = ("smallint", "integer", "bigint")


@dataclass(frozen=True)
class SourceDigest:
    """How to ask a source what its rows of ``[start, end)`` on the spec's cursor are: ``fetch()``
    returns their number and the sum, modulo 2**64, of each row's MD5 (first 8 bytes, big-endian)
    over its canonical text.

    The canonical text of a row is its columns in spec order joined by ``chr(31)``: text as is,
    integers in decimal, timestamps as ``YYYY-MM-DD HH:MM:SS`` in UTC (whole seconds, as the
    sources that offer a digest store them), NULL as ``chr(30)``.  When staging's rows of the
    same range hash to the same digest, a load would change nothing, so the loader skips it
    (see :meth:`StagingLoader.load`).  Anything else (a changed, new or quarantined row, a
    duplicate, a tampered staging row) makes the digests differ and the window load in full.
    """

    start: dt.datetime
    end: dt.datetime
    fetch: Callable[[], tuple[int, int]]


def digestible(spec: TableSpec) -> bool:
    """Whether every column of ``spec`` has a canonical text both sides can produce."""
    return all(c.pg_type in ("text", "timestamptz", *_DIGEST_INTEGER_TYPES) for c in spec.columns)


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

    def as_dict(self) -> dict:
        return asdict(self)


def _reason_expr(spec: TableSpec, col: Column) -> sql.Composable:
    """SQL that yields why a raw text value of ``col`` cannot land, or NULL when it can.

    The first failing check wins, so a value is only cast once it is known castable.
    """
    ident = sql.Identifier(col.name)
    checks = []
    if not col.nullable:
        checks.append(sql.SQL("WHEN {c} IS NULL THEN {msg}").format(
            c=ident, msg=sql.Literal(f"{col.name}: required value is missing")))
    if col.name in spec.key:
        checks.append(sql.SQL("WHEN {c} = '' THEN {msg}").format(c=ident, msg=sql.Literal(f"{col.name}: empty key")))
    checks.append(sql.SQL("WHEN octet_length({c}) > {max} THEN {name} || octet_length({c}) || {what}").format(
        c=ident, max=sql.Literal(col.max_bytes), name=sql.Literal(f"{col.name}: "),
        what=sql.Literal(f" bytes, over the limit of {col.max_bytes}")))
    if col.pg_type != "text":
        checks.append(sql.SQL(
            "WHEN {c} IS NOT NULL AND NOT pg_input_is_valid({c}, {t}) "
            "THEN {name} || quote_literal(left({c}, 60)) || {what}"
        ).format(c=ident, t=sql.Literal(col.pg_type), name=sql.Literal(f"{col.name}: "),
                 what=sql.Literal(f" is not a valid {col.pg_type}")))
    if col.pg_type == "timestamptz":
        at = sql.SQL("{}::timestamptz").format(ident)
        utc = sql.SQL("to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')").format(at)
        checks.append(sql.SQL("WHEN {at} < {earliest} THEN {name} || {utc} || {before}").format(
            at=at, earliest=sql.Literal(EARLIEST_TIMESTAMP), name=sql.Literal(f"{col.name}: "), utc=utc,
            before=sql.Literal(f" is before {EARLIEST_TIMESTAMP}")))
        checks.append(sql.SQL("WHEN {at} > now() + {tolerance}::interval THEN {name} || {utc} || {after}").format(
            at=at, tolerance=sql.Literal(FUTURE_TOLERANCE), name=sql.Literal(f"{col.name}: "), utc=utc,
            after=sql.Literal(f" is after the load time plus {FUTURE_TOLERANCE}")))
    return sql.SQL("CASE {} END").format(sql.SQL(" ").join(checks))


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
        ignored_columns: tuple[str, ...] = (),
    ) -> None:
        self.conn = conn
        self.spec = spec
        self.run_id = run_id
        self.tenant = tenant
        self.window_start = window_start
        self.window_end = window_end
        self.progress_every_seconds = progress_every_seconds
        #: Source columns the spec does not know, found by the extraction before the load (reported).
        self.source_ignored_columns = ignored_columns
        self.target = sql.Identifier("staging", spec.staging_table)

    # -- public ----------------------------------------------------------------------------------

    def load(self, batches: Iterable[pa.RecordBatch], source_digest: SourceDigest | None = None) -> LoadResult:
        """Land a stream of Arrow batches (columns by name; extra columns are reported and ignored).

        With a ``source_digest`` equal to staging's rows of its range, nothing is read from
        ``batches``: the load is logged as identical, with every row unchanged.
        """
        return self._land(self._encoded(batches), with_pre_reason=True, source_digest=source_digest)

    def load_csv(self, chunks: Iterable[bytes]) -> LoadResult:
        """Land a stream of CSV bytes whose fields are the spec's columns in order.

        For sources that already speak PostgreSQL's COPY format (A8's ``COPY … TO STDOUT``),
        so the bytes go from the source to the warehouse without being parsed here.
        """
        return self._land(chunks, with_pre_reason=False)

    def _land(self, encoded: Iterable[bytes], *, with_pre_reason: bool,
              source_digest: SourceDigest | None = None) -> LoadResult:
        started = time.monotonic()
        self.ignored_columns: tuple[str, ...] = self.source_ignored_columns
        self.rows_encoded = 0  # counted by _encoded; a CSV pass-through (A8) reports bytes only
        result = LoadResult(
            run_id=self.run_id, source=self.spec.source, table=self.spec.name, tenant=self.tenant,
            window_start=self.window_start.isoformat(), window_end=self.window_end.isoformat(),
        )
        with self.conn.transaction():
            self.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.spec.staging_table}:{self.tenant}",)
            )
            self.conn.execute("SET LOCAL work_mem = '128MB'")  # the dedupe sorts a day in memory, not on disk
            identical_rows = self._identical_rows(source_digest) if source_digest else None
            if identical_rows is not None:
                result.rows_extracted = result.rows_unchanged = identical_rows
                result.identical_to_staging = True
            else:
                self._copy_check_merge(result, encoded, with_pre_reason)
            result.duration_seconds = round(time.monotonic() - started, 3)
            self._log(result)
        return result

    # -- steps -----------------------------------------------------------------------------------

    def _copy_check_merge(self, result: LoadResult, encoded: Iterable[bytes], with_pre_reason: bool) -> None:
        """COPY the batch, quarantine what cannot land, merge the rest by the spec's rule (into ``result``)."""
        self._create_incoming()
        result.rows_extracted = self._copy(encoded, with_pre_reason)
        result.ignored_columns = self.ignored_columns
        result.rows_rejected = self._quarantine()
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

    def _in_range(self) -> sql.Composed:
        """WHERE condition: this tenant's staging rows whose cursor is in ``[%s, %s)`` (bound by the caller)."""
        cursor = sql.Identifier(self.spec.cursor)
        condition = sql.SQL("{c} >= %s AND {c} < %s").format(c=cursor)
        if self.spec.tenant_column and self.tenant is not None:
            condition += sql.SQL(" AND {} = {}").format(sql.Identifier(self.spec.tenant_column),
                                                        sql.Literal(self.tenant))
        return condition

    def _identical_rows(self, digest: SourceDigest) -> int | None:
        """How many rows staging and the source both hold for the digest's range, if they are the
        same rows; None otherwise.  The source is only asked when staging has rows there (a first
        load of a window costs nothing extra)."""
        rows, hash_sum = self._staging_digest(digest)
        if rows and digest.fetch() == (rows, hash_sum):
            return rows
        return None

    def _staging_digest(self, like: SourceDigest) -> tuple[int, int]:
        """Staging's rows of ``like``'s range (this tenant's), digested as :class:`SourceDigest` says."""
        def canonical(col: Column) -> sql.Composable:
            ident = sql.Identifier(col.name)
            if col.pg_type == "timestamptz":
                ident = sql.SQL("to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')").format(ident)
            return sql.SQL("coalesce({}::text, chr(30))").format(ident)

        rows, hash_sum = self.conn.execute(sql.SQL(
            "SELECT count(*), coalesce(sum(('x' || left(md5(concat_ws(chr(31), {fields})), 16))::bit(64)::bigint"
            "::numeric), 0) FROM {target} WHERE {in_range}"
        ).format(fields=sql.SQL(", ").join(map(canonical, self.spec.columns)), target=self.target,
                 in_range=self._in_range()), (like.start, like.end)).fetchone()
        return rows, int(hash_sum) % (1 << 64)

    def _create_incoming(self) -> None:
        cols = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in self.spec.column_names)
        self.conn.execute(
            sql.SQL("CREATE TEMP TABLE _incoming ({}, {}) ON COMMIT DROP").format(
                cols, sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in MARK_COLUMNS)))
        self.conn.execute("CREATE TEMP TABLE _changed (tenant text, day date) ON COMMIT DROP")

    def _changes(self) -> sql.Composed:
        """RETURNING list of a merge statement on target alias ``t``: tenant and reporting day of each row."""
        col = self.spec.column(self.spec.reporting_day_column)
        day = sql.Identifier("t", col.name)
        if col.pg_type == "timestamptz":
            day = sql.SQL("({} AT TIME ZONE 'UTC')::date").format(day)
        tenant = sql.Identifier("t", self.spec.tenant_column) if self.spec.tenant_column else sql.Literal(None)
        return sql.SQL("{tenant}::text AS tenant, {day} AS day").format(tenant=tenant, day=day)

    def _tracked(self, statement: sql.Composable, params=None) -> int:
        """Run a merge statement that ends in ``RETURNING {changes}``, note its days, return its row count."""
        cur = self.conn.execute(sql.SQL(
            "WITH touched AS ({statement}), noted AS (INSERT INTO _changed SELECT DISTINCT tenant, day "
            "FROM touched WHERE day IS NOT NULL) SELECT count(*) FROM touched"
        ).format(statement=statement), params)
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
                has_nul = pc.fill_null(pc.match_substring(col, "\x00"), False)
                if pc.any(has_nul).as_py():
                    col = pc.replace_substring(col, "\x00", "\\u0000")
                    msg = pa.scalar(f"{name}: contains a NUL byte")
                    joined = pc.binary_join_element_wise(reasons, msg, "; ")  # null where no reason yet
                    reasons = pc.if_else(has_nul, pc.coalesce(joined, msg), reasons)
            columns.append(col)
        return pa.RecordBatch.from_arrays([*columns, reasons, raw], names=[*self.spec.column_names, *MARK_COLUMNS])

    def _encoded(self, batches: Iterable[pa.RecordBatch]) -> Iterator[memoryview]:
        """Each batch as COPY CSV bytes, after checking the first batch's columns against the spec."""
        checked = False
        for batch in batches:
            if not checked:
                self.ignored_columns += check_source_columns(
                    self.spec, [n for n in batch.schema.names if n not in MARK_COLUMNS],
                    "the extracted batch")
                checked = True
            if batch.num_rows:
                buf = io.BytesIO()
                pa_csv.write_csv(self._prepare(batch), buf, _CSV_OPTIONS)
                self.rows_encoded += batch.num_rows
                yield buf.getbuffer()

    def _copy(self, encoded: Iterable[bytes], with_pre_reason: bool) -> int:
        columns = [*self.spec.column_names, *(MARK_COLUMNS if with_pre_reason else ())]
        copy_sql = sql.SQL("COPY _incoming ({}) FROM STDIN (FORMAT csv)").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)))
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

    def _reason(self) -> sql.Composable:
        """Why a row of ``_incoming`` cannot land: NULL for a good row."""
        reasons = [sql.SQL("_pre_reason")]
        reasons += [_reason_expr(self.spec, c) for c in self.spec.columns]
        if self.spec.merge_rule is MergeRule.REPLACE_WINDOW:
            # A replaced window must only receive rows inside it, or a rerun could not remove them.
            reasons.append(sql.SQL(
                "CASE WHEN pg_input_is_valid({c}, 'timestamptz') AND NOT ({c}::timestamptz >= {s} AND "
                "{c}::timestamptz < {e}) THEN {msg} END"
            ).format(c=sql.Identifier(self.spec.cursor), s=sql.Literal(self.window_start),
                     e=sql.Literal(self.window_end), msg=sql.Literal(f"{self.spec.cursor}: outside the load window")))
        return sql.SQL("NULLIF(concat_ws('; ', {}), '')").format(sql.SQL(", ").join(reasons))

    def _quarantine(self) -> int:
        """Move every row that cannot land from ``_incoming`` to ``audit.rejected_records``, with its reason.

        One pass evaluates the reason (casts are tried once per value); what stays in
        ``_incoming`` is known good, so the merge only casts.  A value over the size
        limit (``MAX_VALUE_BYTES``) is kept as its first ``QUARANTINE_KEEP_CHARS``
        characters and its size: the audit row shows what was wrong without storing
        a 50 MB text again.
        """
        cur = self.conn.execute(
            sql.SQL(
                "WITH bad AS (DELETE FROM _incoming i WHERE {reason} IS NOT NULL RETURNING i, {reason} AS reason) "
                "INSERT INTO audit.rejected_records (run_id, source, table_name, tenant, payload, reason) "
                "SELECT %(run_id)s, %(source)s, %(table)s, %(tenant)s, "
                "(SELECT coalesce(jsonb_object_agg(key, CASE WHEN jsonb_typeof(value) = 'string' "
                "AND octet_length(value #>> '{{}}') > %(limit)s THEN to_jsonb(left(value #>> '{{}}', %(keep)s) || "
                "' … (' || octet_length(value #>> '{{}}') || ' bytes in all)') ELSE value END), '{{}}') "
                "FROM jsonb_each(p.payload)), reason "
                "FROM bad CROSS JOIN LATERAL (SELECT CASE WHEN (i)._raw IS NOT NULL "  # an unparsed record: its raw text
                "THEN jsonb_strip_nulls(to_jsonb(i) - '_pre_reason' - '_raw') || jsonb_build_object('raw', (i)._raw) "
                "ELSE to_jsonb(i) - '_pre_reason' - '_raw' END AS payload) p"
            ).format(reason=self._reason()),
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
        Safe because the load holds the (table, tenant) lock and the staging key starts
        with the tenant: no other load can add these keys in between.
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
            t=self.target, in_range=self._in_range(), changes=self._changes()), (self.window_start, self.window_end))

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
