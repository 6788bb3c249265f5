"""Rows into PostgreSQL by COPY: a source's own COPY data as it arrives, or Arrow batches encoded as
CSV (each value COPY would refuse marked, the first batch's columns checked against the spec),
written while the next piece is read."""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import sql

from chat_ingest.landing.batch import Batch, StraightLandingRefused, check_source_columns
from chat_ingest.tablespec import MARK_COLUMNS, TableSpec

log = logging.getLogger(__name__)


def _returning_memory_pool() -> pa.MemoryPool:
    """jemalloc's pool, or the system allocator's where pyarrow was built without it.

    Not Arrow's default, mimalloc: it keeps memory Arrow has freed.  Each COPY encodes its batches
    in a thread of its own (:func:`prefetch`); with mimalloc an Unless day of 20k objects grew
    25-35 MB more resident while it copied, though Arrow never held more than 3 MB at once (its
    peak went from about 228 to 253-263 MB; bench/README.md).  ``ARROW_DEFAULT_MEMORY_POOL``, when
    an operator sets it, is left to decide.
    """
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.system_memory_pool()


if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
    pa.set_memory_pool(_returning_memory_pool())

_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
#: The COPY formats a source may hand over, as COPY spells them (a KeyError for any other).
_COPY_FORMATS = {"csv": "csv", "text": "text"}


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
        except BaseException as exc:  # noqa: BLE001 -- handed to the consumer, which re-raises it
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


def mark_uncopyable_values(spec: TableSpec, batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch in spec order plus ``_pre_reason`` and ``_raw``.

    A source that could not even parse a record (a truncated JSON line) hands it over as a row
    with ``_pre_reason`` and its raw text in ``_raw``.  A text value COPY would refuse, failing
    the whole batch, marks its row the same way: a NUL byte (escaped, so the payload still shows
    it) or bytes that are not UTF-8 (a ClickHouse ``String`` holds any bytes; they are shown
    backslash-escaped).  Marked rows are quarantined like any other bad row.
    """
    names = batch.schema.names
    reasons = batch.column("_pre_reason") if "_pre_reason" in names else pa.nulls(batch.num_rows, pa.string())
    raw = batch.column("_raw") if "_raw" in names else pa.nulls(batch.num_rows, pa.string())
    raw = pc.replace_substring(raw, "\x00", "\\u0000")  # already marked bad; COPY must still take it
    columns = []
    for name in spec.column_names:
        col = batch.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col, reasons = _mark_invalid_utf8(name, col, reasons)
            # The check is Arrow's alone; only a batch with a NUL byte builds Arrow values from
            # Python ones below (pa.scalar makes pyarrow import pandas: 35 MB a good day does not pay).
            matches = pc.match_substring(col, "\x00")
            if pc.any(matches).as_py():
                col = pc.replace_substring(col, "\x00", "\\u0000")
                reasons = _add_reason(reasons, pc.fill_null(matches, False), pa.scalar(f"{name}: contains a NUL byte"))
        columns.append(col)
    return pa.RecordBatch.from_arrays([*columns, reasons, raw], names=[*spec.column_names, *MARK_COLUMNS])


def _mark_invalid_utf8(name: str, col: pa.Array, reasons: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``col`` with every value that is not UTF-8 backslash-escaped, and ``reasons`` with its rows
    marked (the first bad byte and where it is, as Ultimate's lines are).

    One validation of the whole column (SIMD, in Arrow) for a good batch; only a batch that fails
    it is walked value by value.
    """
    try:
        col.validate(full=True)
        return col, reasons
    except pa.ArrowInvalid:
        pass
    values, why = [], []
    for value in col.cast(pa.binary() if pa.types.is_string(col.type) else pa.large_binary()).to_pylist():
        try:
            values.append(None if value is None else value.decode("utf-8"))
            why.append(None)
        except UnicodeDecodeError as exc:
            values.append(value.decode("utf-8", errors="backslashreplace"))
            why.append(f"{name}: not valid UTF-8: byte 0x{value[exc.start]:02x} at position {exc.start}")
    marked = pa.array(why, pa.string())
    return pa.array(values, col.type), _add_reason(reasons, pc.is_valid(marked), marked)


def _add_reason(reasons: pa.Array, where: pa.Array, reason: pa.Array | pa.Scalar) -> pa.Array:
    """``reasons`` with ``reason`` appended (after ``; ``) on the rows ``where`` is true."""
    joined = pc.binary_join_element_wise(reasons, reason, "; ")  # null where no reason yet
    return pc.if_else(where, pc.coalesce(joined, reason), reasons)


class ArrowToCsv:
    """Arrow batches as COPY CSV bytes, after checking the first batch's columns against the spec.

    ``straight``: the spec's columns only, for a COPY into staging itself, which refuses the batch
    when a row is already marked bad (its reason can only be kept by the checked road); otherwise
    the spec's columns and then the marks (:data:`~chat_ingest.tablespec.MARK_COLUMNS`).
    ``rows`` counts the rows encoded so far (the COPY's progress), ``ignored_columns`` what the
    batches hold that the spec does not.
    """

    def __init__(self, spec: TableSpec, *, straight: bool) -> None:
        self.spec = spec
        self.straight = straight
        self.rows = 0
        self.ignored_columns: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        """The columns of the CSV rows, in order."""
        return list(self.spec.column_names) if self.straight else [*self.spec.column_names, *MARK_COLUMNS]

    def encode(self, batches: Iterable[pa.RecordBatch]) -> Iterator[memoryview]:
        checked = False
        for batch in batches:
            if not checked:
                self.ignored_columns += check_source_columns(
                    self.spec, [n for n in batch.schema.names if n not in MARK_COLUMNS], "the extracted batch")
                checked = True
            if batch.num_rows:
                prepared = mark_uncopyable_values(self.spec, batch)
                if self.straight:
                    marked = pc.drop_null(prepared.column("_pre_reason"))
                    if len(marked):
                        raise StraightLandingRefused(f"{len(marked)} rows marked bad, e.g. {marked[0].as_py()}")
                    prepared = prepared.select(list(self.spec.column_names))
                buf = io.BytesIO()
                pa_csv.write_csv(prepared, buf, _CSV_OPTIONS)
                self.rows += batch.num_rows
                yield buf.getbuffer()


def copy_into(batch: Batch, data: Iterable[bytes], table: sql.Composable, columns: Iterable[str],
              copy_format: str = "csv", rows_so_far: Callable[[], int] = lambda: 0) -> int:
    """COPY ``data`` (bytes in ``copy_format``) into ``table``'s ``columns``; the number of rows.

    Every ``batch.progress_every_seconds`` the log says how much has been copied (and how many rows,
    when ``rows_so_far`` counts them: a COPY data stream is counted in bytes only)."""
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
        table, sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(_COPY_FORMATS[copy_format]))
    copied = 0
    copy_started = last_report = time.monotonic()
    with batch.conn.cursor() as cur:
        with cur.copy(copy_sql) as copy:
            for piece in prefetch(data):
                copy.write(piece)
                copied += len(piece)
                now = time.monotonic()
                if now - last_report >= batch.progress_every_seconds:
                    elapsed = max(now - copy_started, 1e-9)
                    encoded = rows_so_far()
                    rows = f"{encoded:,} rows so far ({encoded / elapsed:,.0f} rows/s), " if encoded else ""
                    log.info("%s: %s%.1f MB copied (%.1f MB/s)", batch.label, rows, copied / 1e6,
                             copied / 1e6 / elapsed)
                    last_report = now
        return cur.rowcount


def copy_arrow_into(batch: Batch, batches: Iterable[pa.RecordBatch], table: sql.Composable, *,
                    straight: bool) -> tuple[int, tuple[str, ...]]:
    """COPY Arrow ``batches`` into ``table`` as :class:`ArrowToCsv` encodes them (``straight``: into
    staging itself): the number of rows, and the columns the batches held that the spec does not know."""
    encoder = ArrowToCsv(batch.spec, straight=straight)
    copied = copy_into(batch, encoder.encode(batches), table, encoder.columns, rows_so_far=lambda: encoder.rows)
    return copied, encoder.ignored_columns
