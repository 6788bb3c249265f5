"""What every road works on and reports: the source's rows of a range (:class:`Extraction`), the
batch they land as (:class:`Batch`: one table, one tenant, one window, in the loader's transaction,
with the reporting days its changes touch) and the load's summary (:class:`LoadResult`)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException
from psycopg import sql

from chat_ingest.tablespec import TableSpec

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


class StraightLandingRefused(Exception):
    """A range cannot be copied straight into staging; the loader lands it through its checked path."""


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


@dataclass(frozen=True)
class Extraction:
    """How a source reads its rows of ``[start, end)`` on the spec's cursor (this tenant's): a
    table source's query, a document source's spooled table, or rows already in the warehouse.

    Each reader starts a fresh extraction when called; the loader calls at most two (see
    :meth:`~chat_ingest.staging.StagingLoader.land`):

    * ``copy`` yields bytes in PostgreSQL's COPY format ``copy_format`` (``csv``: NULL an empty
      unquoted field; ``text``), the spec's columns in order: the bytes go from the source into
      the warehouse without being parsed here (ClickHouse's ``TabSeparated``, whose escaping is
      the text format's; A8's own ``COPY … TO STDOUT``): PostgreSQL reads the text format faster;
    * ``arrow`` yields Arrow batches (columns by name, plus ``_pre_reason`` / ``_raw`` for a
      record already known bad); a source offering both has ``arrow`` read for the checked
      path, which can mark what COPY data cannot carry (a NUL byte, bytes that are not UTF-8);
    * ``query`` is a SELECT over tables of the loader's transaction (documents a source copied
      into the warehouse to be projected there: Ultimate's records as ``jsonb``) that yields the
      spec's columns as text, then ``_pre_reason`` / ``_raw``; it is read where it lies.

    ``digest``, for a source that can compute one, returns the number of rows and the sum,
    modulo 2**64, of each row's MD5 (first 8 bytes, big-endian) over its canonical text: its
    columns in spec order joined by ``chr(31)``; text as is, integers in decimal, timestamps as
    ``YYYY-MM-DD HH:MM:SS`` in UTC, followed by their fraction of a second without its trailing
    zeros when they have one (``…:00.125``), NULL as ``chr(30)``.  When staging's rows of the range hash to
    the same digest, a
    load would change nothing, so the loader skips it.  Anything else (a changed, new or
    quarantined row, a duplicate, a tampered staging row) makes the digests differ and the
    range load in full.  ``digest_exact``: the source is PostgreSQL too and digests with
    :func:`~chat_ingest.landing.digest.digest_sql` exactly (every column cast to staging's type and
    hashed by PostgreSQL, timestamps to the microsecond), so any column type takes part; the digest
    may return None (not comparable).

    ``ignored_columns``: what the source table has and the spec does not (reported, not landed);
    ``drift``: the fields a document source's records hold that no column names, with how many
    records hold each (landed in the table's ``extra``, and reported); ``unexported_days``: days
    the vendor said it has no data of (Ultimate's 404), which landed nothing.
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
    drift: dict[str, int] = field(default_factory=dict)
    unexported_days: tuple[str, ...] = ()


#: The ways a range lands, cheapest first (:class:`~chat_ingest.staging.StagingLoader`).
ROADS = ("identical", "straight", "checked")


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
    #: How the range landed (:data:`ROADS`): ``identical`` (the source's rows hash to staging's, so none
    #: were extracted), ``straight`` (a range staging did not hold yet, copied straight into the staging
    #: table and checked there) or ``checked`` (through a temp table, quarantine and the merge).
    road: str = "checked"
    #: What the source delivered that the spec does not name, with the rows holding it: a table's
    #: ignored columns (every row) and a document's undeclared fields (see :class:`Extraction`).
    drift: dict[str, int] = field(default_factory=dict)
    #: Days the vendor has no export of (see :class:`Extraction`).
    unexported_days: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """The summary as plain JSON (the task's XCom): lists, not tuples, which Airflow would show in
        the UI's XCom tab wrapped as ``{'__classname__': 'builtins.tuple', '__data__': [...]}``."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}


@dataclass
class Batch:
    """One landing's subject -- a table (its spec), a tenant and a window -- in the loader's transaction.

    Every road asks it the same things: which staging rows are a range's, and which reporting days a
    changed row touches.  A road's statements note those days in the temp table ``_changed``
    (:meth:`tracked`, or a road's own scan), and :meth:`record_changed_days` writes them to
    ``audit.changed_days``, which the reporting DAG rebuilds.
    """

    conn: Any
    spec: TableSpec
    run_id: str
    tenant: str | None
    window_start: dt.datetime
    window_end: dt.datetime
    #: How often a long COPY logs its progress.
    progress_every_seconds: float = 30.0
    #: Source columns the spec does not know, found by the extraction before the load (reported).
    source_ignored_columns: tuple[str, ...] = ()

    #: Reporting days a row's period is noted for at most (a corrupt span must not note years).
    MAX_SPAN_DAYS = 366
    #: The least ``work_mem`` of the statements in :meth:`hashing` (a larger one configured is kept).
    HASH_WORK_MEM = "64MB"

    @property
    def target(self) -> sql.Identifier:
        return sql.Identifier("staging", self.spec.staging_table)

    @property
    def label(self) -> str:
        """How the log names this batch: the staging table and the tenant."""
        return f"{self.spec.qualified_name} [{self.tenant}]"

    def result(self, **counts) -> LoadResult:
        """A fresh summary of this batch with ``counts``."""
        return LoadResult(
            run_id=self.run_id, source=self.spec.source, table=self.spec.name, tenant=self.tenant,
            window_start=self.window_start.isoformat(), window_end=self.window_end.isoformat(),
            ignored_columns=self.source_ignored_columns, **counts,
        )

    def in_range(self, start: dt.datetime, end: dt.datetime) -> sql.Composed:
        """WHERE condition: this tenant's staging rows whose cursor is in ``[start, end)``."""
        cursor = sql.Identifier(self.spec.cursor)
        condition = sql.SQL("{c} >= {s} AND {c} < {e}").format(c=cursor, s=sql.Literal(start), e=sql.Literal(end))
        if self.spec.tenant_column and self.tenant is not None:
            condition += sql.SQL(" AND {} = {}").format(sql.Identifier(self.spec.tenant_column),
                                                        sql.Literal(self.tenant))
        return condition

    def holds_rows(self, start: dt.datetime, end: dt.datetime) -> bool:
        """Whether staging holds any of this tenant's rows of ``[start, end)``."""
        return self.conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {target} WHERE {in_range})").format(
            target=self.target, in_range=self.in_range(start, end))).fetchone()[0]

    def changes(self) -> sql.Composed:
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

    def noted_days(self, rows: str) -> sql.Composed:
        """Every (tenant, day) the ``rows`` (tenant, day, last_day) touch, to insert into ``_changed``."""
        return sql.SQL(
            "SELECT DISTINCT tenant, d::date FROM {rows}, generate_series(least(day, last_day), "
            "least(greatest(day, last_day), least(day, last_day) + {cap}), interval '1 day') d "
            "WHERE day IS NOT NULL").format(rows=sql.SQL(rows), cap=sql.Literal(self.MAX_SPAN_DAYS))

    def create_changed(self) -> None:
        """The (tenant, day) pairs a load changes, noted by its statements (see :meth:`record_changed_days`)."""
        self.conn.execute("CREATE TEMP TABLE _changed (tenant text, day date) ON COMMIT DROP")

    def tracked(self, statement: sql.Composable) -> int:
        """Run a merge statement that ends in ``RETURNING {changes}``, note its days, return its row count."""
        cur = self.conn.execute(sql.SQL(
            "WITH touched AS ({statement}), noted AS (INSERT INTO _changed {noted}) SELECT count(*) FROM touched"
        ).format(statement=statement, noted=self.noted_days("touched")))
        return cur.fetchone()[0]

    @contextmanager
    def hashing(self) -> Iterator[None]:
        """Statements run inside group and deduplicate by hashing, not sorting (an ``ORDER BY`` still
        sorts), in memory.

        They read rows this transaction just landed, of which the planner has no statistics: it
        expects a few dozen and sorts them all, on disk at 3M rows (6.4 s, where hashing took 2.6 s;
        bench/README.md).  The hash tables get at least :data:`HASH_WORK_MEM` of ``work_mem``
        (times ``hash_mem_multiplier``): the 250k conversations of a 3M-row day took 41 MB, and at
        PostgreSQL's default 4 MB they spilled to disk in 21 batches (0.4-0.7 s more).  The settings
        are put back after them; if one fails, the rollback of its transaction or savepoint puts
        them back (a statement sent to an aborted transaction would replace the error that aborted it)."""
        sorting, memory = self.conn.execute(
            "SELECT current_setting('enable_sort'), current_setting('work_mem'), "
            "set_config('enable_sort', 'off', true), "
            "set_config('work_mem', CASE WHEN pg_size_bytes(current_setting('work_mem')) < pg_size_bytes(%(least)s) "
            "THEN %(least)s ELSE current_setting('work_mem') END, true)", {"least": self.HASH_WORK_MEM}).fetchone()[:2]
        yield
        self.conn.execute("SELECT set_config('enable_sort', %s, true), set_config('work_mem', %s, true)",
                          (sorting, memory))

    def record_changed_days(self) -> tuple[str, ...]:
        """Write the days noted in ``_changed`` to ``audit.changed_days``; the ISO dates, sorted."""
        rows = self.conn.execute(
            "INSERT INTO audit.changed_days (run_id, source, table_name, tenant, day) "
            "SELECT DISTINCT %s, %s, %s, tenant, day FROM _changed RETURNING day",
            (self.run_id, self.spec.source, self.spec.name)).fetchall()
        return tuple(sorted({d.isoformat() for (d,) in rows}))
