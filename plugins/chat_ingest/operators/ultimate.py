"""Ultimate: one bot's export file(s) of one day → staging conversations and intents."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from chat_ingest.operators.load import DocumentLoadOperator
from chat_ingest.sources import ultimate


class UltimateToStagingOperator(DocumentLoadOperator):
    """Land the export of ``[start, end)`` (whole days) of one bot: conversations and their intents.

    Each day's signed URLs are streamed record by record, once, into both tables,
    which are replaced together in one transaction.  A URL that expires mid-run is
    re-requested (up to ``max_url_refreshes`` times); a JSON line that does not
    parse is landed as a quarantined conversation carrying its raw text.
    """

    tables = ultimate.TABLES
    tenant_label = "bot"

    def __init__(self, *, ultimate_conn_id: str = "ultimate_export", url_ttl_minutes: int = 60,
                 max_url_refreshes: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ultimate_conn_id = ultimate_conn_id
        self.url_ttl_minutes = url_ttl_minutes
        self.max_url_refreshes = max_url_refreshes

    def rows(self, start: dt.datetime, end: dt.datetime) -> Iterator[tuple[str, dict]]:
        from chat_ingest.hooks.ultimate import BadLine, UltimateExportHook

        hook = UltimateExportHook(http_conn_id=self.ultimate_conn_id)
        days = [start.date() + dt.timedelta(days=i) for i in range((end.date() - start.date()).days)]
        for day in days:  # refuse a day outside the vendor's window before any work
            hook.check_retention(day)
        for day in days:
            export_date = day.isoformat()
            for record in self._records(hook, day):
                if isinstance(record, BadLine):  # the intents of an unreadable record are unknowable
                    yield "conversations", {"export_date": export_date, "bot_id": self.tenant,
                                            "_pre_reason": record.reason, "_raw": record.raw}
                    continue
                yield "conversations", ultimate.conversation_row(record, export_date)
                for row in ultimate.intent_rows(record, export_date):
                    yield "intents", row

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
