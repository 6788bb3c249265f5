"""What COPY would refuse in an Arrow batch marks its row instead of failing the whole batch."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest

from chat_ingest.landing.copying import mark_uncopyable_values
from chat_ingest.sources import botslovers


def _unvalidated(values: list[bytes | None], text_type: pa.DataType) -> pa.Array:
    """A string array of raw bytes, built as a reader does (clickhouse-connect's Arrow stream): from
    buffers nobody checked for UTF-8."""
    offset_type = pa.int64() if text_type == pa.large_string() else pa.int32()
    offsets = pa.array([0, *itertools.accumulate(len(v or b"") for v in values)], offset_type)
    present = pa.array([v is not None for v in values])
    return pa.Array.from_buffers(text_type, len(values), [
        present.buffers()[1], offsets.buffers()[1], pa.py_buffer(b"".join(v or b"" for v in values))])


@pytest.mark.parametrize("text_type", [pa.string(), pa.large_string()])
def test_bytes_that_are_not_utf8_and_nul_bytes_mark_their_rows_and_are_shown_escaped(text_type):
    """A ClickHouse ``String`` holds any bytes and arrives as an Arrow string nobody validated: each bad
    value marks its row with the byte and where it is (both reasons when a row has both faults), is
    shown backslash-escaped, and leaves the other rows and an earlier reason as they were."""
    spec = botslovers.MESSAGES
    columns = {c: pa.array(["x"] * 5, text_type) for c in spec.column_names}
    columns["text"] = _unvalidated([b"caf\xc3\xa9", b"hel\xfflo", b"nul\x00and\xfe", None, b"fine"], text_type)
    columns["id"] = _unvalidated([b"a", b"b", b"c", b"\xc0d", b"e"], text_type)
    columns["_pre_reason"] = pa.array([None, None, None, None, "parsed badly"], pa.string())
    marked = mark_uncopyable_values(spec, pa.RecordBatch.from_pydict(columns)).to_pydict()

    assert marked["text"] == ["café", "hel\\xfflo", "nul\\u0000and\\xfe", None, "fine"]
    assert marked["id"] == ["a", "b", "c", "\\xc0d", "e"]
    assert marked["_pre_reason"] == [
        None,
        "text: not valid UTF-8: byte 0xff at position 3",
        "text: not valid UTF-8: byte 0xfe at position 7; text: contains a NUL byte",
        "id: not valid UTF-8: byte 0xc0 at position 0",
        "parsed badly",
    ]
