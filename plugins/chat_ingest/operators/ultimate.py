"""Ultimate: one bot's export file(s) of one day → staging conversations and intents."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from chat_ingest.operators.load import DocumentLoadOperator
from chat_ingest.sources import ultimate
from chat_ingest.windows import window_days

if TYPE_CHECKING:
    from chat_ingest.hooks.ultimate import BadLine, UltimateExportHook
    from chat_ingest.landing.batch import Extraction


class UltimateToStagingOperator(DocumentLoadOperator):
    """Land the export of ``[start, end)`` (whole days) of one bot: conversations and their intents.

    Each day's signed URLs are streamed record by record, once, into a temp table of the
    landing transaction as ``jsonb``: PostgreSQL parses them on its own core while this
    process reads on, and both tables are projected from there in SQL
    (:func:`~chat_ingest.sources.ultimate.projection`) and replaced together.  A URL that
    expires mid-run is re-requested (up to ``max_url_refreshes`` times); a record that cannot
    be read is landed as a quarantined conversation carrying its raw text.
    """

    tables = ultimate.TABLES
    tenant_label = "bot"

    def __init__(self, *, ultimate_conn_id: str = "ultimate_export", url_ttl_minutes: int = 60,
                 max_url_refreshes: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ultimate_conn_id = ultimate_conn_id
        self.url_ttl_minutes = url_ttl_minutes
        self.max_url_refreshes = max_url_refreshes

    def refuse_window(self, start: dt.datetime, end: dt.datetime) -> None:
        """A day the vendor no longer (or does not yet) keep."""
        from chat_ingest.hooks.ultimate import UltimateExportHook

        hook = UltimateExportHook(http_conn_id=self.ultimate_conn_id)
        for day in window_days(start, end):
            hook.check_retention(day)

    def extractions(self, conn, start: dt.datetime, end: dt.datetime,
                    scope: contextlib.ExitStack) -> dict[str, Extraction]:
        from psycopg import sql

        from chat_ingest.hooks.ultimate import BadLine, UltimateExportHook
        from chat_ingest.landing.batch import Extraction
        from chat_ingest.landing.copying import prefetch

        hook = UltimateExportHook(http_conn_id=self.ultimate_conn_id)
        conn.execute(ultimate.DOCUMENTS_DDL)
        copy_sql = sql.SQL("COPY _ultimate_documents ({}) FROM STDIN").format(
            sql.SQL(", ").join(map(sql.Identifier, ultimate.DOCUMENTS_COLUMNS)))
        with conn.cursor().copy(copy_sql) as copy:
            for day in window_days(start, end):
                documents = self._documents(hook, day)
                # read and check the next records while this thread waits on the warehouse
                for batch in prefetch(iter(lambda: list(itertools.islice(documents, 1000)), []), depth=4):
                    for document in batch:
                        if isinstance(document, BadLine):  # the intents of an unreadable record are unknowable
                            copy.write_row((day, None, document.reason, document.raw))
                        else:
                            copy.write_row((day, document, None, None))
        return {name: Extraction(start, end, query=ultimate.projection(spec, self.tenant))
                for name, spec in self.tables.items()}

    def lineage_inputs(self) -> list:
        from chat_ingest.hooks.ultimate import SIGNED_URLS_ENDPOINT
        from chat_ingest.lineage import http_endpoint

        return [http_endpoint(self.ultimate_conn_id, f"{SIGNED_URLS_ENDPOINT}/{self.tenant}")]

    def _documents(self, hook: UltimateExportHook, day: dt.date) -> Iterator[str | BadLine]:
        from chat_ingest.hooks.ultimate import SignedUrlExpired

        urls = hook.get_signed_urls(day, self.tenant, ttl_minutes=self.url_ttl_minutes)
        self.log.info("Ultimate %s %s: %d export file(s)", self.tenant, day, len(urls))
        for index in range(len(urls)):
            for refresh in range(self.max_url_refreshes + 1):
                try:
                    yield from hook.iter_documents(urls[index])
                    break
                except SignedUrlExpired:
                    if refresh == self.max_url_refreshes:
                        raise
                    self.log.warning("signed URL %d of %s expired; requesting fresh URLs", index + 1, day)
                    urls = hook.get_signed_urls(day, self.tenant, ttl_minutes=self.url_ttl_minutes)

