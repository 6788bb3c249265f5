"""The shared staging loader: every source lands a batch (one table, one tenant, one window) through
:class:`StagingLoader`, which takes the cheapest of three roads that is safe, in one transaction,
under a per-partition advisory lock (two runs of the same table and tenant serialise instead of
interleaving):

* **identical** (:mod:`chat_ingest.landing.digest`): staging holds rows of the range and the
  source's digest equals theirs: nothing is extracted;
* **straight** (:mod:`chat_ingest.landing.straight`): staging holds nothing of the range (a new
  day): the rows are copied straight into the staging table and checked there in one scan;
* **checked** (:mod:`chat_ingest.landing.checked`): everything else, and whatever the straight road
  refused: COPY into a temp table, quarantine, merge by the spec's rule.

Each road moves the rows that cannot land to ``audit.rejected_records`` with the reason, notes the
reporting days whose rows it inserted, updated or deleted in ``audit.changed_days`` (what the
reporting DAG rebuilds), and the loader records the load in ``audit.load_log``.

A crash anywhere rolls everything back: staging shows all of a batch or none.  Several loads may
share one outer transaction (a document source lands all its tables at once): the roads' temp
tables are dropped when they are done.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from psycopg.types.json import Jsonb

from chat_ingest.landing.batch import Batch, Extraction, LoadResult
from chat_ingest.landing.checked import land_checked
from chat_ingest.landing.digest import identical_rows
from chat_ingest.landing.straight import REFUSALS, can_land_straight, land_straight
from chat_ingest.tablespec import TableSpec

log = logging.getLogger(__name__)


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
        self.batch = Batch(conn, spec, run_id=run_id, tenant=tenant, window_start=window_start,
                           window_end=window_end, progress_every_seconds=progress_every_seconds)

    def land(self, extraction: Extraction) -> LoadResult:
        """Land a source's rows of a range, the cheapest way that is safe.

        * **Identical**: staging holds rows of the range and the source's digest equals
          theirs: nothing is extracted, every row is logged unchanged.
        * **Straight**: staging holds no row of the range yet (a new day): the rows are
          copied straight into the staging table and checked there in one scan, the bad ones
          moved to quarantine.  Anything COPY refuses (a malformed or missing value, a key
          landed before or repeated, a record the source could not parse, a NUL byte, bytes
          that are not UTF-8) or a row outside the range rolls the attempt back to a
          savepoint, and the range is extracted again for the checked road.
        * **Checked**: everything else: COPY into a temp table, quarantine, merge by the rule.
        """
        batch = self.batch
        started = time.monotonic()
        with batch.conn.transaction():
            batch.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                               (f"{batch.spec.staging_table}:{batch.tenant}",))
            batch.conn.execute("SET LOCAL work_mem = '128MB'")  # the dedupe sorts a day in memory, not on disk
            batch.source_ignored_columns = extraction.ignored_columns
            result = self._cheapest_road(extraction)
            result.drift = {**{column: result.rows_extracted for column in result.ignored_columns}, **extraction.drift}
            result.unexported_days = extraction.unexported_days
            result.duration_seconds = round(time.monotonic() - started, 3)
            self._log(result)
        return result

    def _cheapest_road(self, extraction: Extraction) -> LoadResult:
        """Land ``extraction`` by the first of the roads :meth:`land` lists that applies."""
        batch = self.batch
        if not batch.holds_rows(extraction.start, extraction.end):
            if can_land_straight(batch):
                try:
                    with batch.conn.transaction():  # a savepoint: a refused attempt leaves nothing behind
                        return land_straight(batch, extraction)
                except REFUSALS as exc:
                    log.info("%s: not landed straight (%s); extracting again for the checked road",
                             batch.label, str(exc).splitlines()[0])
        elif extraction.digest:
            identical = identical_rows(batch, extraction)
            if identical is not None:
                return batch.result(rows_extracted=identical, rows_unchanged=identical, road="identical")
        return land_checked(batch, extraction)

    def _log(self, r: LoadResult) -> None:
        batch = self.batch
        batch.conn.execute(
            "INSERT INTO audit.load_log (run_id, source, table_name, tenant, window_start, window_end, "
            "rows_extracted, rows_rejected, rows_duplicate, rows_landed, rows_unchanged, rows_deleted, "
            "duration_seconds, ignored_columns, drift) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s)",
            (r.run_id, r.source, r.table, r.tenant, batch.window_start, batch.window_end, r.rows_extracted,
             r.rows_rejected, r.rows_duplicate, r.rows_landed, r.rows_unchanged, r.rows_deleted,
             r.duration_seconds, list(r.ignored_columns), Jsonb(r.drift)),
        )
