"""Extract-and-land operators: the landing logic every source shares.

Two shapes of source:

* **tables** (Botslovers, A8): each table is its own query, so one task lands one
  table (:class:`ExtractLoadOperator`);
* **documents** (Ultimate conversations, Unless conversation objects): one record
  holds rows of several tables (a conversation and its intents or log items), so
  one task reads each document once and lands every table of the source in one
  transaction (:class:`DocumentLoadOperator`): either the rows are built here and
  spooled (Unless, :class:`SpooledDocumentLoadOperator`), or the documents are copied
  into the warehouse and the rows projected there (Ultimate).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from chat_ingest.project import WAREHOUSE_CONN_ID

if TYPE_CHECKING:
    import datetime as dt

    from chat_ingest.landing.batch import Extraction, LoadResult
    from chat_ingest.tablespec import TableSpec


class LandingOperator(BaseOperator):
    """What both shapes share: the tenant, the window, the warehouse, and the run summary."""

    ui_color = "#e8f4ff"
    #: name -> TableSpec, set by each source.
    tables: dict[str, TableSpec] = {}
    #: Whether the window's ``full_refresh`` flag means something to this source (its DAG offers it).
    supports_full_refresh = False
    #: What the vendor calls a tenant (company, bot, website), for messages.
    tenant_label = "tenant"
    #: Whether a scheduled run lands the ``recheck_days`` before its window again (rows or files the
    #: vendor completed after the first run); a source that finds changed data by itself has no need.
    lands_recheck_days = True

    def __init__(self, *, tenant: str | None = None, tenants: list[str] | None = None, window: dict[str, str],
                 warehouse_conn_id: str = WAREHOUSE_CONN_ID, **kwargs) -> None:
        super().__init__(**kwargs)
        #: One tenant (None: a table the vendor does not split by tenant), or ``tenants``: a batch the
        #: task lands one after the other (many tenants in fewer task instances; see ``execute``).
        self.tenant = tenant
        self.tenants = tenants
        self.window = window
        self.warehouse_conn_id = warehouse_conn_id

    def execute(self, context) -> dict[str, Any]:
        """Land the tenant, or each tenant of the batch in turn: each in its own transaction with its
        own summary (the XCom is ``{tenant: summary}``), one failing not stopping the others.  The task
        then fails naming them, and its retry lands the batch again, which rewrites nothing of the
        tenants that had landed."""
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        if self.tenants is None:
            return self.land(context)
        summaries, failures = {}, {}
        for tenant in self.tenants:
            with self.as_tenant(tenant):
                try:
                    summaries[tenant] = self.land(context)
                except Exception as exc:  # noqa: BLE001 -- reported below, with every other tenant's
                    self.log.exception("%s %s failed; the batch's other tenants go on", self.tenant_label, tenant)
                    failures[tenant] = exc
        if failures:
            final = all(isinstance(exc, AirflowFailException) for exc in failures.values())
            message = (f"{len(failures)} of {len(self.tenants)} tenants of the batch failed: "
                       + "; ".join(f"{tenant}: {exc}" for tenant, exc in failures.items()))
            raise (AirflowFailException if final else AirflowException)(message)
        return summaries

    def land(self, context) -> dict[str, Any]:
        """Land ``self.tenant``'s window; its summary."""
        raise NotImplementedError

    @contextlib.contextmanager
    def as_tenant(self, tenant: str):
        """``self.tenant`` set to one tenant of the batch for the time."""
        saved, self.tenant = self.tenant, tenant
        try:
            yield
        finally:
            self.tenant = saved

    @property
    def landed_specs(self) -> list[TableSpec]:
        """The staging tables this task writes."""
        raise NotImplementedError

    def lineage_inputs(self) -> list:
        """The vendor's datasets this task reads (OpenLineage datasets, see chat_ingest.lineage)."""
        raise NotImplementedError

    def get_openlineage_facets_on_complete(self, task_instance):
        """Vendor table, endpoint or prefix → ``staging.*``, for the OpenLineage provider."""
        from chat_ingest.lineage import lineage, staging_table

        inputs = []
        for tenant in self.tenants if self.tenants is not None else [self.tenant]:
            with self.as_tenant(tenant):
                inputs += self.lineage_inputs()
        return lineage(inputs, [staging_table(spec.staging_table, conn_id=self.warehouse_conn_id)
                                for spec in self.landed_specs])

    def refuse_window(self, start: dt.datetime, end: dt.datetime) -> None:
        """Refuse a window the source cannot serve, before the warehouse is touched."""

    def ranges(self, rechecks: bool) -> list[tuple[dt.datetime, dt.datetime]]:
        """What a run lands, each range in its own transaction: the window (refused at once when the
        source cannot serve it), then, when ``rechecks``, each day a scheduled run lands again before it
        (``recheck_start``) that the source still serves (one it no longer keeps is skipped, saying so)."""
        from airflow.sdk.exceptions import AirflowFailException

        from chat_ingest.windows import parse_window, rechecked_days

        window = parse_window(self.window)
        self.refuse_window(*window)
        ranges = [window]
        for start, end in rechecked_days(self.window) if rechecks else []:
            try:
                self.refuse_window(start, end)
            except AirflowFailException as exc:
                self.log.warning("not rechecking %s: %s", start.date(), exc)
                continue
            ranges.append((start, end))
        if len(ranges) > 1:
            self.log.info("rechecking the %d day(s) before the window: what the vendor wrote or completed after "
                          "their run lands now", len(ranges) - 1)
        return ranges

    def refuse_unsafe_tenant(self) -> None:
        """Refuse a hostile tenant name (quotes, ``../``, look-alikes) before any connection, query, key
        or header is built from it; None is a table the vendor does not split by tenant."""
        from chat_ingest.names import check_tenant

        if self.tenant is not None:
            check_tenant(self.tenant, self.tenant_label)

    def report(self, spec: TableSpec, result: LoadResult, run_id: str) -> dict[str, Any]:
        """Log one table's outcome and return it as the XCom summary."""
        self.log.info(
            "staging.%s [%s] %s → %s: %d extracted, %d landed, %d unchanged, %d duplicate, %d rejected, "
            "%d deleted in %.1fs (%s rows/s); reporting days changed: %s", spec.staging_table, self.tenant,
            result.window_start, result.window_end, result.rows_extracted, result.rows_landed,
            result.rows_unchanged, result.rows_duplicate, result.rows_rejected, result.rows_deleted,
            result.duration_seconds, f"{result.rows_extracted / max(result.duration_seconds, 1e-3):,.0f}",
            ", ".join(result.changed_days) or "none",
        )
        if result.road == "identical":
            self.log.info("the source's %d rows of this window hash to exactly what staging holds: "
                          "nothing extracted or rewritten", result.rows_extracted)
        elif result.rows_extracted == 0:
            self.log.info("the source had no rows for this window: an empty day, recorded in audit.load_log")
        if result.rows_rejected:
            self.log.warning("%d rows quarantined in audit.rejected_records (run %s)", result.rows_rejected, run_id)
        if result.unexported_days:
            self.log.info("the vendor has no export of %s for %s: nothing landed for those days", self.tenant,
                          ", ".join(result.unexported_days))
        return result.as_dict()


class ExtractLoadOperator(LandingOperator):
    """Stream one table of one tenant for one window from a source into staging.

    Subclasses name their table specs and implement :meth:`extraction`; this class
    resolves the window, creates the staging table if needed, runs the shared
    :class:`~chat_ingest.staging.StagingLoader` and returns the run summary
    (rows extracted / rejected / landed, window, changed days), which lands in XCom.
    """

    template_fields: Sequence[str] = ("tenant", "tenants", "table", "window")

    def __init__(self, *, table: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.table = table

    @property
    def landed_specs(self) -> list[TableSpec]:
        return [self.tables[self.table]]

    def extraction(self, spec: TableSpec, start: dt.datetime, end: dt.datetime) -> Extraction:
        """Check the source table and say how to read the window's rows from it (see
        :class:`~chat_ingest.landing.batch.Extraction`): in bounded pieces, never all at once, and
        only when the loader asks."""
        raise NotImplementedError

    def rechecks(self, spec: TableSpec) -> bool:
        """Whether a scheduled run lands ``spec``'s days before its own again (``recheck_start``)."""
        return self.lands_recheck_days

    def land(self, context) -> dict[str, Any]:
        """Land the window; on a scheduled run, then each day it rechecks, in its own transaction (an
        unchanged day is a digest comparison): the window's summary, with theirs as ``rechecked``."""
        from chat_ingest.staging import StagingLoader
        from chat_ingest.warehouse import connect, ensure_schema

        self.refuse_unsafe_tenant()
        if self.table not in self.tables:
            raise ValueError(f"unknown table {self.table!r}; known: {', '.join(sorted(self.tables))}")
        spec, run_id = self.tables[self.table], context["run_id"]
        ranges = self.ranges(self.rechecks(spec))
        extractions = [self.extraction(spec, start, end) for start, end in ranges]  # the source, before the warehouse
        summaries = []
        with connect(self.warehouse_conn_id) as conn:
            ensure_schema(conn)
            for (start, end), extraction in zip(ranges, extractions, strict=True):
                loader = StagingLoader(conn, spec, run_id=run_id, tenant=self.tenant, window_start=start,
                                       window_end=end)
                summaries.append(self.report(spec, loader.land(extraction), run_id))
        summary, *rechecked = summaries
        if rechecked:
            summary["rechecked"] = rechecked
        return summary


class DocumentLoadOperator(LandingOperator):
    """Read each document of one tenant's window once and land every table of the source, atomically.

    :meth:`extractions` says, inside the landing transaction, how each table's rows are read;
    every table is then landed in that one transaction, together with :meth:`before_commit`
    (e.g. advancing a watermark): staging shows all of a run or none of it.
    """

    template_fields: Sequence[str] = ("tenant", "tenants", "window")

    @property
    def landed_specs(self) -> list[TableSpec]:
        return list(self.tables.values())

    def extractions(self, conn, start: dt.datetime, end: dt.datetime,
                    scope: contextlib.ExitStack) -> dict[str, Extraction]:
        """Read the window's documents; how to read each table's rows (by table name).  Runs inside
        the landing transaction; ``scope`` holds what must live until every table has landed."""
        raise NotImplementedError

    def before_commit(self, conn, results: dict[str, LoadResult]) -> None:
        """Runs inside the landing transaction after every table landed."""

    def land(self, context) -> dict[str, Any]:
        """Land the window, every table in one transaction; on a scheduled run of a source that
        :attr:`lands_recheck_days`, then each day it rechecks (:meth:`ranges`), each in its own
        transaction: the window's summaries, with theirs under each table's ``rechecked``."""
        from chat_ingest.warehouse import connect, ensure_schema

        self.refuse_unsafe_tenant()
        ranges = self.ranges(self.lands_recheck_days)
        with connect(self.warehouse_conn_id) as conn:
            ensure_schema(conn)
            summary, *rechecked = [self._land_range(conn, context["run_id"], start, end) for start, end in ranges]
        for name in summary if rechecked else ():
            summary[name]["rechecked"] = [later[name] for later in rechecked]
        return summary

    def _land_range(self, conn, run_id: str, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        """Every table's rows of ``[start, end)``, in one transaction: their summaries, by table."""
        from chat_ingest.staging import StagingLoader

        with contextlib.ExitStack() as scope, conn.transaction():
            extractions = self.extractions(conn, start, end, scope)
            results = {
                spec.name: StagingLoader(conn, spec, run_id=run_id, tenant=self.tenant, window_start=start,
                                         window_end=end).land(extractions[spec.name])
                for spec in self.tables.values()
            }
            self.before_commit(conn, results)
        return {name: self.report(self.tables[name], result, run_id) for name, result in results.items()}


class SpooledDocumentLoadOperator(DocumentLoadOperator):
    """A document source whose rows are built here, record by record (:meth:`rows`).

    :meth:`rows` yields ``(table, row)`` pairs, rows as dicts of text values (plus
    ``_pre_reason`` / ``_raw`` for a record already known bad; an ``extra`` column as the dict of
    the document's fields no column names, which each table's ``drift`` counts).  Each row is appended
    to its table's local spool file as it comes — memory holds one row, however large
    the day.  A spool can be read twice, so a table the loader cannot land straight is
    landed from it again.
    """

    def rows(self, start: dt.datetime, end: dt.datetime) -> Iterator[tuple[str, dict[str, str | None]]]:
        raise NotImplementedError

    def extractions(self, conn, start: dt.datetime, end: dt.datetime,
                    scope: contextlib.ExitStack) -> dict[str, Extraction]:
        from chat_ingest.landing.batch import Extraction

        folder = Path(scope.enter_context(tempfile.TemporaryDirectory(prefix="chat-ingest-spool-")))
        with _Spool(folder, self.tables) as spool:
            for table, row in self.rows(start, end):
                spool.add(table, row)
        for name, drift in spool.drift.items():
            if drift:
                self.log.warning("%s %s: fields the seed does not name, landed in staging.%s.extra: %s",
                                 self.tenant_label, self.tenant, self.tables[name].staging_table,
                                 ", ".join(f"{field} ({rows} rows)" for field, rows in drift.most_common()))
        return {name: Extraction(start, end, arrow=functools.partial(spool.read, name), drift=dict(spool.drift[name]))
                for name in self.tables}


class _Spool:
    """Per-table files of JSON lines, one row each, read back as Arrow batches of text columns.

    Why JSON lines and not Arrow's own builders: building an Arrow array from Python values
    (``RecordBatch.from_pylist``, ``pa.array``) makes pyarrow import pandas, 35 MB of resident
    memory a landing never uses; ``orjson`` writes a row in microseconds, and pyarrow's JSON
    parser, given the text schema, turns about ``READ_BYTES`` of whole lines at a time into a
    batch.  (Its streaming reader, ``open_json``, reads dozens of blocks ahead: 38 MB held for
    1 MB blocks.)  A line longer than ``READ_BYTES`` is read whole, as one batch.  A key outside
    the table's columns fails the read: the rows come from the source's own parser, so such a key is
    a defect there, and dropping it would lose a value silently.
    """

    READ_BYTES = 1 << 20

    def __init__(self, folder: Path, tables: dict[str, TableSpec]) -> None:
        import orjson
        import pyarrow as pa

        from chat_ingest.tablespec import MARK_COLUMNS

        self.folder = folder
        self.schemas = {name: pa.schema([(c, pa.string()) for c in (*spec.column_names, *MARK_COLUMNS)])
                        for name, spec in tables.items()}
        self.files: dict[str, Any] = {}
        self.encode = functools.partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)
        self.extra = functools.partial(orjson.dumps, default=str)
        #: Per table: each field of a row's ``extra`` and how many rows held it.
        self.drift = {name: collections.Counter() for name in tables}

    def __enter__(self) -> _Spool:
        for name in self.schemas:
            self.files[name] = open(self.folder / f"{name}.jsonl", "wb")
        return self

    def add(self, table: str, row: dict) -> None:
        extra = row.get("extra")
        if extra is not None:
            self.drift[table].update(extra.keys())
            row["extra"] = self.extra(extra).decode()
        self.files[table].write(self.encode(row))

    def __exit__(self, *exc) -> None:
        for spool_file in self.files.values():
            spool_file.close()

    def read(self, table: str) -> Iterable:
        import io

        import pyarrow as pa
        import pyarrow.json as pa_json

        schema, path = self.schemas[table], self.folder / f"{table}.jsonl"
        if not path.stat().st_size:  # nothing spooled: an empty batch still tells the loader the columns
            yield pa.RecordBatch.from_arrays([pa.nulls(0, field.type) for field in schema], schema=schema)
            return
        parse_options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
        with open(path, "rb") as spool_file:
            while lines := spool_file.readlines(self.READ_BYTES):
                block = b"".join(lines)
                read_options = pa_json.ReadOptions(use_threads=False, block_size=len(block) + 1)
                try:
                    rows = pa_json.read_json(io.BytesIO(block), read_options, parse_options)
                except pa.ArrowInvalid as exc:
                    if "unexpected field" not in str(exc):
                        raise
                    raise ValueError(f"spooled {table} rows carry keys that are not its columns: "
                                     f"{sorted(self._unknown_keys(lines, schema))}") from exc
                yield from rows.to_batches()

    @staticmethod
    def _unknown_keys(lines: list[bytes], schema) -> set[str]:
        """The keys of ``lines`` outside ``schema``: what pyarrow's error does not name."""
        import orjson

        return {key for line in lines for key in orjson.loads(line)} - set(schema.names)
