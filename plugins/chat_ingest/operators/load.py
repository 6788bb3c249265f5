"""Extract-and-land operators: one class holds the landing logic every source shares."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from chat_ingest.project import WAREHOUSE_CONN_ID

if TYPE_CHECKING:
    import datetime as dt

    from chat_ingest.tablespec import TableSpec


class ExtractLoadOperator(BaseOperator):
    """Stream one table of one tenant for one window from a source into staging.

    Subclasses name their table specs and implement :meth:`extract`; this class
    resolves the window, creates the staging table if needed, runs the shared
    :class:`~chat_ingest.staging.StagingLoader` and returns the run summary
    (rows extracted / rejected / landed, window), which lands in XCom.
    """

    template_fields: Sequence[str] = ("tenant", "table", "window")
    ui_color = "#e8f4ff"
    #: name -> TableSpec, set by each source.
    tables: dict[str, TableSpec] = {}
    #: What :meth:`extract` yields: Arrow record batches, or CSV bytes in the spec's column order.
    extract_format = "arrow"

    def __init__(self, *, tenant: str | None, table: str, window: dict[str, str],
                 warehouse_conn_id: str = WAREHOUSE_CONN_ID, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tenant = tenant
        self.table = table
        self.window = window
        self.warehouse_conn_id = warehouse_conn_id

    def extract(self, spec: TableSpec, start: dt.datetime, end: dt.datetime) -> Iterator:
        """Yield the window in bounded pieces (see ``extract_format``); never all of it at once."""
        raise NotImplementedError

    def execute(self, context) -> dict[str, Any]:
        from chat_ingest.staging import StagingLoader
        from chat_ingest.warehouse import connect, ensure_schema
        from chat_ingest.windows import parse_window

        if self.table not in self.tables:
            raise ValueError(f"unknown table {self.table!r}; known: {', '.join(sorted(self.tables))}")
        spec = self.tables[self.table]
        start, end = parse_window(self.window)
        batches = self.extract(spec, start, end)
        with connect(self.warehouse_conn_id) as conn:
            ensure_schema(conn, [spec])
            loader = StagingLoader(conn, spec, run_id=context["run_id"], tenant=self.tenant,
                                   window_start=start, window_end=end)
            result = loader.load_csv(batches) if self.extract_format == "csv" else loader.load(batches)
        summary = result.as_dict()
        self.log.info(
            "staging.%s [%s] %s → %s: %d extracted, %d landed, %d unchanged, %d duplicate, %d rejected, "
            "%d deleted in %.1fs", spec.staging_table, self.tenant, result.window_start, result.window_end,
            result.rows_extracted, result.rows_landed, result.rows_unchanged, result.rows_duplicate,
            result.rows_rejected, result.rows_deleted, result.duration_seconds,
        )
        if result.rows_extracted == 0:
            self.log.info("the source had no rows for this window: an empty day, recorded in audit.load_log")
        if result.rows_rejected:
            self.log.warning("%d rows quarantined in audit.rejected_records (run %s)", result.rows_rejected,
                             context["run_id"])
        return summary
