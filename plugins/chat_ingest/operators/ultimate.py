"""Ultimate: one bot's export file(s) of one day → staging (conversations, or their intents)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING

from chat_ingest.operators.load import ExtractLoadOperator
from chat_ingest.sources import ultimate

if TYPE_CHECKING:
    from chat_ingest.tablespec import TableSpec


class UltimateToStagingOperator(ExtractLoadOperator):
    """Land the export of ``[start, end)`` (whole days) of one bot into ``staging.ultimate_<table>``.

    Each day's signed URLs are streamed record by record into Arrow batches of
    ``batch_size`` rows.  A URL that expires mid-run is re-requested (up to
    ``max_url_refreshes`` times); a JSON line that does not parse is landed as a
    quarantined row carrying its raw text.
    """

    tables = ultimate.TABLES

    def __init__(self, *, ultimate_conn_id: str = "ultimate_export", batch_size: int = 5000,
                 url_ttl_minutes: int = 60, max_url_refreshes: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ultimate_conn_id = ultimate_conn_id
        self.batch_size = batch_size
        self.url_ttl_minutes = url_ttl_minutes
        self.max_url_refreshes = max_url_refreshes

    def extract(self, spec: TableSpec, start: dt.datetime, end: dt.datetime) -> Iterator:
        from chat_ingest.hooks.ultimate import UltimateExportHook

        hook = UltimateExportHook(http_conn_id=self.ultimate_conn_id)
        days = [start.date() + dt.timedelta(days=i) for i in range((end.date() - start.date()).days)]
        for day in days:  # refuse a day outside the vendor's window before any work
            hook.check_retention(day)
        return self._batches(hook, spec, days)

    def _records(self, hook, day: dt.date) -> Iterator:
        from chat_ingest.hooks.ultimate import SignedUrlExpired

        urls = hook.get_signed_urls(day, self.tenant, ttl_minutes=self.url_ttl_minutes)
        self.log.info("Ultimate %s %s: %d export file(s)", self.tenant, day, len(urls))
        for index in range(len(urls)):
            for refresh in range(self.max_url_refreshes + 1):
                try:
                    yield from hook.iter_records(urls[index])
                    break
                except SignedUrlExpired:
                    if refresh == self.max_url_refreshes:
                        raise
                    self.log.warning("signed URL %d of %s expired; requesting fresh URLs", index + 1, day)
                    urls = hook.get_signed_urls(day, self.tenant, ttl_minutes=self.url_ttl_minutes)

    def _batches(self, hook, spec: TableSpec, days: list[dt.date]) -> Iterator:
        import pyarrow as pa

        from chat_ingest.hooks.ultimate import BadLine
        from chat_ingest.staging import MARK_COLUMNS

        names = [*spec.column_names, *MARK_COLUMNS]
        rows: list[dict] = []
        for day in days:
            export_date = day.isoformat()
            for record in self._records(hook, day):
                if isinstance(record, BadLine):
                    if spec is ultimate.CONVERSATIONS:  # intents of an unreadable record are unknowable
                        rows.append({"export_date": export_date, "bot_id": self.tenant,
                                     "_pre_reason": record.reason, "_raw": record.raw})
                elif spec is ultimate.CONVERSATIONS:
                    rows.append(ultimate.conversation_row(record, export_date))
                else:
                    rows.extend(ultimate.intent_rows(record, export_date))
                if len(rows) >= self.batch_size:
                    yield pa.RecordBatch.from_pylist(rows, schema=_schema(names))
                    rows = []
        yield pa.RecordBatch.from_pylist(rows, schema=_schema(names))


def _schema(names: list[str]):
    import pyarrow as pa

    return pa.schema([(n, pa.string()) for n in names])
