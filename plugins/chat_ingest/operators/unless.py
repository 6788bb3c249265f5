"""Unless: the conversation objects of one website changed since the last run → staging."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from chat_ingest.operators.load import SpooledDocumentLoadOperator
from chat_ingest.sources import unless

if TYPE_CHECKING:
    from chat_ingest.landing.batch import LoadResult

#: A raw payload kept in audit.rejected_records is cut here (and the reason says so).
MAX_RAW_CHARS = 1_000_000


class UnlessToStagingOperator(SpooledDocumentLoadOperator):
    """Land every conversation object of one website modified in ``[lower, upper)``.

    ``upper`` is the window's end or now, whichever is later (see :meth:`selection`).
    ``lower`` is the window's start, or earlier: the stored watermark of the
    website's prefix (``audit.watermarks``) minus ``overlap_minutes``, so changes
    a previous run did not see (an object written while it listed, a paused DAG)
    are caught up.  Without a watermark (the first run), or when the window asks
    for a full refresh, the run reads the prefix's whole history.
    Objects are fetched by ``max_workers`` threads; each lands as its conversation
    (upserted when newer than staging's) and its log items (replaced with it), and
    the watermark advances in the same transaction.
    """

    tables = unless.TABLES
    tenant_label = "website"
    supports_full_refresh = True
    #: Objects rewritten since the watermark are read again by every run: no day needs a recheck.
    lands_recheck_days = False
    template_fields: Sequence[str] = (*SpooledDocumentLoadOperator.template_fields, "bucket", "account")

    def __init__(self, *, bucket: str, account: str, aws_conn_id: str = "unless_s3", max_workers: int = 16,
                 overlap_minutes: int = 15, page_size: int = 1000, progress_every_seconds: float = 30.0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.bucket = bucket
        self.account = account
        self.aws_conn_id = aws_conn_id
        self.max_workers = max_workers
        self.overlap_minutes = overlap_minutes
        self.page_size = page_size
        self.progress_every_seconds = progress_every_seconds
        self.newest_seen: dt.datetime | None = None

    @property
    def prefix(self) -> str:
        """The website's key prefix.  The website itself was refused before any I/O if unsafe
        (``refuse_unsafe_tenant``); the account, a plain argument, is checked here."""
        from chat_ingest.names import check_tenant

        return f"{check_tenant(self.account, 'account')}/conversations/{self.tenant}/"

    def lineage_inputs(self) -> list:
        from chat_ingest.lineage import s3_prefix

        return [s3_prefix(self.bucket, self.prefix)]

    # -- selection -------------------------------------------------------------------------------

    def read_watermark(self) -> dt.datetime | None:
        from chat_ingest.warehouse import connect, ensure_schema

        with connect(self.warehouse_conn_id) as conn:
            ensure_schema(conn)
            row = conn.execute("SELECT watermark FROM audit.watermarks WHERE source = %s AND scope = %s",
                               (unless.SOURCE, self.prefix)).fetchone()
        return row[0] if row else None

    def selection(self, start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime | None, dt.datetime]:
        """``[lower, upper)`` of LastModified this run reads (``lower`` None: the whole history).

        ``upper`` is the later of the window's end and now: objects are rewritten in place, so the
        current version of a conversation of an earlier day may be dated any time after it.  A rerun
        of 11-26 reads what changed since (and lands the current state of that day's conversations),
        as an operator rerunning a day expects; an object staging already holds in that version is
        not downloaded again, so the wider range costs a listing.
        """
        upper = max(end, dt.datetime.now(dt.timezone.utc))
        watermark = self.read_watermark()
        if watermark is None or self.window.get("full_refresh"):
            return None, upper
        return min(start, watermark - dt.timedelta(minutes=self.overlap_minutes)), upper

    def selected(self, pages, lower: dt.datetime | None, end: dt.datetime) -> Iterator[unless.ObjectRef]:
        """The listed objects modified in ``[lower, end)``, remembering the newest LastModified seen."""
        for page in pages:
            for obj in page:
                modified = obj["LastModified"].astimezone(dt.timezone.utc)
                if (lower is None or modified >= lower) and modified < end:
                    if self.newest_seen is None or modified > self.newest_seen:
                        self.newest_seen = modified
                    yield unless.ObjectRef(obj["Key"], modified, obj.get("ETag", "").strip('"') or None,
                                           obj.get("Size", 0))

    # -- landing ---------------------------------------------------------------------------------

    def rows(self, start: dt.datetime, end: dt.datetime) -> Iterator[tuple[str, dict]]:
        from chat_ingest.hooks.unless import ObjectGone, UnlessS3Hook

        prefix = self.prefix
        self.newest_seen = None  # this tenant's, not the one a batch landed before it
        lower, upper = self.selection(start, end)
        self.log.info("Unless s3://%s/%s: objects modified in [%s, %s)", self.bucket, prefix,
                      lower.isoformat() if lower else "the beginning", upper.isoformat())
        hook = UnlessS3Hook(self.aws_conn_id, max_workers=self.max_workers)
        refs = self.selected(hook.iter_pages(self.bucket, prefix, self.page_size), lower, upper)
        bad_keys: list[tuple[str, dict]] = []
        counts = {"objects": 0, "bad": 0, "gone": 0, "unchanged": 0}
        good_keys = self._keys_in_layout(refs, bad_keys)
        if not self.window.get("full_refresh"):
            good_keys = self._not_yet_landed(good_keys, counts)
        started = last_report = time.monotonic()
        for (ref, ids), body in hook.download_many(self.bucket, good_keys, key_of=lambda item: item[0].key):
            counts["objects"] += 1
            if isinstance(body, ObjectGone):
                counts["gone"] += 1
                self.log.warning("s3://%s/%s was deleted after it was listed; not landed", self.bucket, ref.key)
                continue
            yield from self._document(ref, ids, body, counts)
            now = time.monotonic()
            if now - last_report >= self.progress_every_seconds:
                self.log.info("Unless %s: %d objects read (%.0f/s), %d bad", self.tenant, counts["objects"],
                              counts["objects"] / (now - started), counts["bad"])
                last_report = now
        yield from bad_keys
        self.log.info("Unless %s: %d objects read, %d bad, %d deleted meanwhile, %d keys outside the layout, "
                      "%d already landed in this version (not read again)", self.tenant, counts["objects"],
                      counts["bad"], counts["gone"], len(bad_keys), counts["unchanged"])

    def _keys_in_layout(self, refs, bad_keys: list) -> Iterator[tuple[unless.ObjectRef, dict[str, str]]]:
        """Objects whose key follows the documented layout; the others go to ``bad_keys`` to report."""
        for ref in refs:
            ids = unless.parse_key(ref.key)
            if ids is None or ids["website"] != self.tenant or ids["account"] != self.account:
                bad_keys.append(self._rejected(
                    ref, "object key does not match <account>/conversations/<website>/<session>/"
                         "<conversation>.json", ref.key))
                continue
            yield ref, ids

    def _not_yet_landed(self, items, counts: dict) -> Iterator[tuple[unless.ObjectRef, dict[str, str]]]:
        """The objects whose LastModified and ETag staging does not already hold.

        A rerun, or the overlap a watermark adds, then costs a listing and one lookup
        per page instead of a GET and a parse per object; nothing unchanged is rewritten.
        """
        from psycopg import sql

        from chat_ingest.warehouse import connect

        table = unless.TABLES["conversations"]
        lookup = sql.SQL(
            "SELECT session, conversation_id, last_modified, etag FROM {} WHERE website = %s "
            "AND (session, conversation_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        ).format(sql.Identifier("staging", table.staging_table))
        items = iter(items)
        with connect(self.warehouse_conn_id) as conn:
            if not conn.execute("SELECT to_regclass(%s)", (f"staging.{table.staging_table}",)).fetchone()[0]:
                yield from items
                return
            while page := list(itertools.islice(items, self.page_size)):
                held = set(conn.execute(lookup, (self.tenant, [ids["session"] for _, ids in page],
                                                 [ids["conversation"] for _, ids in page])).fetchall())
                for ref, ids in page:
                    if (ids["session"], ids["conversation"], ref.last_modified, ref.etag) in held:
                        counts["unchanged"] += 1
                    else:
                        yield ref, ids

    def _document(self, ref: unless.ObjectRef, ids: dict[str, str], body: bytes, counts: dict) -> Iterator:
        import orjson

        try:
            if not body.strip():
                raise unless.BadDocument(f"empty object ({len(body)} bytes)")
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise unless.BadDocument(f"not valid JSON: {exc}") from None
            conversation, logs = unless.document_rows(ref, ids, doc)
        except unless.BadDocument as exc:
            counts["bad"] += 1
            yield self._rejected(ref, str(exc), body.decode("utf-8", errors="replace"), ids)
            return
        yield "conversations", conversation
        for log_row in logs:
            yield "logs", log_row

    def _rejected(self, ref: unless.ObjectRef, reason: str, raw: str,
                  ids: dict[str, str] | None = None) -> tuple[str, dict]:
        """A conversation row that only carries why it cannot land, the object's key and its raw text."""
        if len(raw) > MAX_RAW_CHARS:
            reason += f" (raw payload cut to its first {MAX_RAW_CHARS} characters)"
            raw = raw[:MAX_RAW_CHARS]
        ids = ids or {}
        return "conversations", {
            "website": self.tenant, "session": ids.get("session"), "conversation_id": ids.get("conversation"),
            "object_key": ref.key, "last_modified": ref.last_modified.isoformat(), "etag": ref.etag,
            "_pre_reason": f"{ref.key}: {reason}", "_raw": raw,
        }

    def before_commit(self, conn, results: dict[str, LoadResult]) -> None:
        """Advance the prefix's watermark with the load (never backwards: runs may overlap)."""
        if self.newest_seen is None:
            return
        conn.execute(
            "INSERT INTO audit.watermarks (source, scope, watermark) VALUES (%s, %s, %s) "
            "ON CONFLICT (source, scope) DO UPDATE SET "
            "watermark = greatest(audit.watermarks.watermark, EXCLUDED.watermark), updated_at = now()",
            (unless.SOURCE, self.prefix, self.newest_seen))
        self.log.info("watermark of %s: %s", self.prefix, self.newest_seen.isoformat())
