"""Ultimate: one bot's export file(s) of one day → staging conversations and intents."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import functools
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from chat_ingest.operators.load import DocumentLoadOperator
from chat_ingest.sources import ultimate
from chat_ingest.windows import window_days

if TYPE_CHECKING:
    from psycopg import sql

    from chat_ingest.hooks.ultimate import BadLine, Document, UltimateExportHook
    from chat_ingest.landing.batch import Extraction
    from chat_ingest.tablespec import TableSpec


class UltimateToStagingOperator(DocumentLoadOperator):
    """Land the export of ``[start, end)`` (whole days) of one bot: conversations and their intents.

    Each day's signed URLs are streamed record by record, once, into a temp table of the
    landing transaction as ``jsonb``: PostgreSQL parses them on its own core while this
    process reads on, and both tables are projected from there in SQL
    (:func:`~chat_ingest.sources.ultimate.projection`) and replaced together.  Field names the
    columns spell otherwise (the live export's upper case) are renamed there in one statement;
    a record's fields no column names land in ``extra`` and are counted as drift.  A URL that
    expires mid-run is re-requested (up to ``max_url_refreshes`` times); a record that cannot
    be read is landed as a quarantined conversation carrying its raw text; a day the vendor has
    no export of (HTTP 404) lands nothing and is named in the summary (``unexported_days``).

    A scheduled run also lands the ``recheck_days`` before its own again: the vendor may still
    have been building a file when it was first read.  The projected rows' digest is compared
    with staging's first, so an unchanged file rewrites nothing.
    """

    tables = ultimate.TABLES
    tenant_label = "bot"
    lands_recheck_days = True

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
        drift: collections.Counter[str] = collections.Counter()
        respelled, unexported = 0, []
        with conn.cursor().copy(copy_sql) as copy:
            for day in window_days(start, end):
                documents = self._documents(hook, day)
                if documents is None:
                    unexported.append(day.isoformat())
                    continue
                # read and check the next records while this thread waits on the warehouse
                chunks = iter(functools.partial(_chunk, documents, 1000), [])
                for batch in prefetch(chunks, depth=4):
                    for document in batch:
                        if isinstance(document, BadLine):  # the intents of an unreadable record are unknowable
                            copy.write_row((day, None, document.reason, document.raw, False, False))
                            continue
                        fields = ultimate.read_fields(document.fields)
                        if fields is None:  # the columns' own names: the common case
                            copy.write_row((day, document, None, None, False, False))
                        elif fields.clash:
                            copy.write_row((day, None, fields.clash, document, False, False))
                        else:
                            drift.update(fields.undeclared)
                            respelled += fields.respell
                            copy.write_row((day, document, None, None, fields.respell, bool(fields.undeclared)))
        if respelled:
            conn.execute(ultimate.respelling())
        if drift:
            self.log.warning("Ultimate %s: fields no column names, landed in staging.ultimate_conversations.extra: %s",
                             self.tenant, ", ".join(f"{name} ({rows} records)" for name, rows in drift.most_common()))
        extractions = {}
        for name, spec in self.tables.items():
            query = ultimate.projection(spec, self.tenant)
            extractions[name] = Extraction(
                start, end, query=query, digest=functools.partial(_digest, conn, spec, query), digest_exact=True,
                drift=dict(drift) if spec is ultimate.CONVERSATIONS else {}, unexported_days=tuple(unexported))
        return extractions

    def lineage_inputs(self) -> list:
        from chat_ingest.hooks.ultimate import UltimateExportHook
        from chat_ingest.lineage import http_endpoint

        endpoint = UltimateExportHook(http_conn_id=self.ultimate_conn_id).endpoint
        return [http_endpoint(self.ultimate_conn_id, f"{endpoint}/{self.tenant}")]

    def _documents(self, hook: UltimateExportHook, day: dt.date) -> Iterator[Document | BadLine] | None:
        """The records of ``day``'s export of this bot, file after file; None when the vendor has none."""
        urls = hook.get_signed_urls(day, self.tenant, ttl_minutes=self.url_ttl_minutes)
        if urls is None:
            return None
        self.log.info("Ultimate %s %s: %d export file(s)", self.tenant, day, len(urls))
        return self._records(hook, day, urls)

    def _records(self, hook: UltimateExportHook, day: dt.date, urls: list[str]) -> Iterator[Document | BadLine]:
        from chat_ingest.hooks.ultimate import SignedUrlExpired, UltimateExportError

        for index in range(len(urls)):
            for refresh in range(self.max_url_refreshes + 1):
                try:
                    yield from hook.iter_documents(urls[index])
                    break
                except SignedUrlExpired:
                    if refresh == self.max_url_refreshes:
                        raise
                    self.log.warning("signed URL %d of %s expired; requesting fresh URLs", index + 1, day)
                    fresh = hook.get_signed_urls(day, self.tenant, ttl_minutes=self.url_ttl_minutes)
                    if fresh is None or len(fresh) != len(urls):
                        now = "none" if fresh is None else len(fresh)
                        raise UltimateExportError(
                            f"the export of {self.tenant} for {day} changed while it was read ({len(urls)} file(s), "
                            f"now {now}): the day lands nothing; run it again") from None
                    urls = fresh


def _chunk(records: Iterator, size: int) -> list:
    """The next ``size`` records (fewer at the end; none once they are all read)."""
    return list(itertools.islice(records, size))


def _digest(conn, spec: TableSpec, query: sql.Composable) -> tuple[int, int] | None:
    """The exact digest (:func:`~chat_ingest.landing.digest.digest_sql`) of ``spec``'s rows projected from
    this load's records, as staging would hold them; None when a row would not land as it is (a record
    marked bad, a value that does not cast): such a range always loads."""
    import psycopg
    from psycopg import sql

    from chat_ingest.landing.digest import digest_sql

    relation = sql.SQL("({}) p").format(query)
    try:
        with conn.transaction():  # a savepoint: a value that does not cast leaves the load's transaction intact
            if conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {} WHERE p._pre_reason IS NOT NULL)").format(
                    relation)).fetchone()[0]:
                return None
            rows, total = conn.execute(digest_sql(spec, relation, sql.SQL("true"), exact=True)).fetchone()
    except psycopg.errors.DataError:
        return None
    return rows, int(total) % (1 << 64)
