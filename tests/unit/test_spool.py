"""The Unless spool: rows written one by one, read back as Arrow batches of text, twice if need be."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest

from chat_ingest.operators.load import _Spool
from chat_ingest.sources import unless
from chat_ingest.tablespec import MARK_COLUMNS


def _rows_of(spool: _Spool, table: str) -> list[dict]:
    return pa.Table.from_batches(list(spool.read(table))).to_pylist()


def test_every_value_comes_back_as_written_even_a_line_longer_than_a_read_block(tmp_path):
    spec = unless.TABLES["logs"]
    columns = [*spec.column_names, *MARK_COLUMNS]
    tricky = 'quote " backslash \\ newline \n NUL \x00 é 😀'
    huge = "\u0001" * (_Spool.READ_BYTES // 2) + '"' * _Spool.READ_BYTES  # escapes to ~4 blocks
    written = [
        {columns[0]: "first", columns[1]: tricky},
        {columns[0]: "huge", "_raw": huge, "_pre_reason": "too big"},
        *({columns[0]: f"row {i}", columns[2]: None} for i in range(20_000)),
    ]
    with _Spool(tmp_path, unless.TABLES) as spool:
        for row in written:
            spool.add("logs", row)
    expected = [{c: row.get(c) for c in columns} for row in written]
    for _ in range(2):  # the loader may read a spool twice (landing it straight, then checked)
        batches = list(spool.read("logs"))
        assert len(batches) > 1, "read a block at a time, not all at once"
        assert all(b.schema == spool.schemas["logs"] for b in batches)
        assert pa.Table.from_batches(batches).to_pylist() == expected
    empty = list(spool.read("conversations"))
    assert [b.num_rows for b in empty] == [0] and empty[0].schema == spool.schemas["conversations"]


@pytest.mark.parametrize("value", [5, True, {"nested": 1}, ["a"]])
def test_a_value_that_is_not_text_fails_the_read_instead_of_landing_altered(tmp_path, value):
    column = unless.TABLES["conversations"].column_names[0]
    with _Spool(tmp_path, unless.TABLES) as spool:
        spool.add("conversations", {column: value})
    with pytest.raises(pa.ArrowInvalid, match="changed from string"):
        _rows_of(spool, "conversations")


def test_a_key_outside_the_tables_columns_fails_the_read_instead_of_being_dropped(tmp_path):
    column = unless.TABLES["conversations"].column_names[0]
    with _Spool(tmp_path, unless.TABLES) as spool:
        spool.add("conversations", {column: "kept", "not_a_column": "would be lost"})
    with pytest.raises(ValueError, match=r"conversations rows carry keys that are not its columns: \['not_a_column'\]"):
        _rows_of(spool, "conversations")


def test_spooling_and_preparing_a_good_day_for_copy_does_not_import_pandas(tmp_path):
    """pyarrow imports pandas (35 MB resident) whenever it builds Arrow values from Python ones
    (``pa.array``, ``pa.scalar``, a Python constant given to a compute function); the landing path
    of a good day must not pay for it (the Unless benchmark's peak RSS target)."""
    code = f"""
import sys
from pathlib import Path
from chat_ingest.operators.load import _Spool
from chat_ingest.sources import unless
import chat_ingest.staging  # every road, as a load task imports them
from chat_ingest.landing.copying import ArrowToCsv
spec = unless.TABLES["logs"]
with _Spool(Path({str(tmp_path)!r}), unless.TABLES) as spool:
    for i in range(3):
        spool.add("logs", {{spec.column_names[0]: f"x{{i}}", spec.column_names[1]: None}})
encoder = ArrowToCsv(spec, straight=False)
assert b"".join(encoder.encode(spool.read("logs"))).count(b"\\n") == 3 and encoder.rows == 3
assert sum(b.num_rows for b in spool.read("conversations")) == 0
print("pandas" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
