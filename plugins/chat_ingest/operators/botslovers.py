"""Botslovers: ClickHouse tables per company → staging."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from chat_ingest.operators.load import ExtractLoadOperator
from chat_ingest.rules import NO_DATE_MARK
from chat_ingest.sources import botslovers

if TYPE_CHECKING:
    from chat_ingest.landing.batch import Extraction
    from chat_ingest.tablespec import Column, TableSpec


#: The rows of a range come in key order within slices of this many hours of the cursor (see
#: :func:`extraction_query`).
SORT_SLICE_HOURS = 6


def extraction_query(spec: TableSpec, source_table: str, source_types: Mapping[str, str]) -> str:
    """SELECT of the spec's columns (as :func:`_value` renders them from the table's own
    ``source_types``) over ``[start, end)`` on its cursor; values bound server-side.

    Ordered by slice of the cursor (:data:`SORT_SLICE_HOURS`), then by key: staging's primary key
    then grows in a few ascending runs instead of at random places, and ClickHouse sorts one slice
    at a time.  A table kept in cursor order (the stand-in's, and the usual order of an event table)
    is then read in order and streamed as each slice is sorted; sorting the whole range by key
    made the first byte wait for the sort of the whole day (1.3-2.4 s of a 3M-row day, which
    ClickHouse held whole in memory meanwhile; bench/README.md).  Any order lands the same rows.
    """
    from chat_ingest.hooks.clickhouse import check_identifier

    check_identifier(source_table, "table name")
    select = ", ".join(f"{_value(c, source_types[c.name])} AS `{c.name}`" for c in spec.columns)
    order = ", ".join([f"toStartOfInterval(src.`{spec.cursor}`, INTERVAL {SORT_SLICE_HOURS} HOUR)",
                       *(f"src.`{k}`" for k in spec.key)])
    return f"SELECT {select} FROM `{source_table}` AS src {_window_filter(spec)} ORDER BY {order}"


def digest_query(spec: TableSpec, source_table: str, source_types: Mapping[str, str]) -> str:
    """The rows of the window digested the way :class:`~chat_ingest.landing.batch.Extraction` defines it,
    so the loader can compare them with staging's without extracting them."""
    from chat_ingest.hooks.clickhouse import check_identifier

    check_identifier(source_table, "table name")
    fields = ", ".join(f"ifNull({_digested(c, source_types[c.name])}, char(30))" for c in spec.columns)
    return (f"SELECT count(), sum(reinterpretAsUInt64(reverse(substring(MD5(concatWithSeparator(char(31), "
            f"{fields})), 1, 8)))) FROM `{source_table}` AS src {_window_filter(spec)}")


def _value(column: Column, source_type: str) -> str:
    """A column as extracted and digested, by the type the company's table has (which need not be
    the documented one): text, so that both formats a load reads (TabSeparated and Arrow) carry the
    same value.  Arrow would hand over an ``Enum8`` as its number, a ``UUID`` as 16 raw bytes and a
    ``DateTime64`` as an integer; ``toString`` renders each as ClickHouse prints it.  DateTime
    values are rendered in UTC, so no time zone (the server's or ours) can shift them on the way
    into staging's ``timestamptz``.  A ``String`` is taken as it is (the common case costs nothing),
    but one that lands in a ``timestamptz`` is marked unreadable when it holds no digit
    (:data:`~chat_ingest.rules.NO_DATE_MARK`: PostgreSQL would read ``now`` as the load's
    time), as the other sources mark their text times."""
    name = f"src.`{column.name}`"
    if "DateTime" in source_type:
        return f"toString({name}, 'UTC')"
    text = name if source_type in ("String", "Nullable(String)") else f"toString({name})"
    if column.pg_type == "timestamptz":  # the mark is bound server-side (see _parameters)
        return f"if(match({text}, '[0-9]'), {text}, concat({text}, {{no_date_mark:String}}))"
    return text


_DATETIME64_PRECISION = re.compile(r"DateTime64\((\d+)")


def _digested(column: Column, source_type: str) -> str:
    """A column's text in the digest: as extracted, but a ``DateTime64`` with a fraction of a second
    without its trailing zeros, as staging's digest renders a timestamp (``…:00.125``, a whole second
    ``…:00``); printed with all its digits (``…:00.000``), no such table's rerun ever matched staging."""
    precision = _DATETIME64_PRECISION.search(source_type)
    if precision and int(precision.group(1)) > 0:
        return f"replaceRegexpOne({_value(column, source_type)}, '\\\\.?0+$', '')"
    return _value(column, source_type)


def _window_filter(spec: TableSpec) -> str:
    # It names the table's column, not the same-named text alias of the extraction's SELECT list.
    return f"WHERE src.`{spec.cursor}` >= {{start:DateTime('UTC')}} AND src.`{spec.cursor}` < {{end:DateTime('UTC')}}"


class BotsloversToStagingOperator(ExtractLoadOperator):
    """Land ``<table>_<company>`` from the Botslovers ClickHouse into ``staging.botslovers_<table>``.

    ``chat_agent_log`` rows change after creation, so its extraction starts
    ``agent_log_lookback`` before the window and the loader keeps the newest
    ``updated_at`` of every row.
    """

    tables = botslovers.TABLES
    tenant_label = "company"

    def __init__(self, *, clickhouse_conn_id: str = "botslovers_clickhouse",
                 agent_log_lookback: dt.timedelta = dt.timedelta(hours=48), max_block_size: int = 65536,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.clickhouse_conn_id = clickhouse_conn_id
        self.agent_log_lookback = agent_log_lookback
        self.max_block_size = max_block_size

    def extraction(self, spec: TableSpec, start: dt.datetime, end: dt.datetime) -> Extraction:
        """The company's table checked (it exists, no spec column missing), read as TabSeparated
        for a straight landing (ClickHouse's escaping is PostgreSQL's COPY text format, which
        PostgreSQL reads faster than CSV) and as Arrow for the checked path, with ClickHouse
        digesting the range."""
        from airflow.sdk.exceptions import AirflowFailException

        from chat_ingest.hooks.clickhouse import ClickHouseHttpHook
        from chat_ingest.landing.batch import Extraction, check_source_columns
        from chat_ingest.landing.digest import digestible

        source_table = self._source_table(spec)
        hook = ClickHouseHttpHook(clickhouse_conn_id=self.clickhouse_conn_id)
        columns = hook.table_columns(source_table)
        if not columns:
            raise AirflowFailException(f"Botslovers table {source_table!r} does not exist for company {self.tenant!r}; "
                                       "check include/config/sources.yaml")
        ignored = check_source_columns(spec, columns, source_table)
        if spec.version_column:  # rows that change after creation are re-read a lookback back
            start -= self.agent_log_lookback
        query, parameters = extraction_query(spec, source_table, columns), _parameters(start, end)
        settings = {"max_block_size": self.max_block_size}

        def read(fmt: str) -> Iterator:
            self.log.info("extracting %s where %s in [%s, %s) as %s", source_table, spec.cursor, start, end, fmt)
            if fmt == "TabSeparated":  # NULL is \N both sides; a \0 (NUL) is refused by COPY
                return hook.stream_raw(query, fmt, parameters=parameters, settings=settings)
            return hook.stream_arrow(query, parameters=parameters, settings=settings)

        def digest() -> tuple[int, int]:
            rows, hash_sum = hook.first_row(digest_query(spec, source_table, columns), parameters)
            return int(rows), int(hash_sum or 0)

        return Extraction(start, end, copy=lambda: read("TabSeparated"), copy_format="text",
                          arrow=lambda: read("Arrow"),
                          digest=digest if digestible(spec) else None, ignored_columns=ignored)

    def rechecks(self, spec: TableSpec) -> bool:
        """Not a table whose rows change after creation: its extraction re-reads ``agent_log_lookback``
        before the window already."""
        return not spec.version_column

    def lineage_inputs(self) -> list:
        from chat_ingest.lineage import clickhouse_table

        return [clickhouse_table(self.clickhouse_conn_id, self._source_table(spec)) for spec in self.landed_specs]

    def _source_table(self, spec: TableSpec) -> str:
        from chat_ingest.hooks.clickhouse import check_identifier

        return f"{spec.name}_{check_identifier(self.tenant, 'company')}"


def _parameters(start: dt.datetime, end: dt.datetime) -> dict[str, str]:
    """The values the extraction and digest queries bind server-side: the window, and the mark of a
    text time without a digit (:func:`_value`)."""
    fmt = "%Y-%m-%d %H:%M:%S"
    return {"start": start.strftime(fmt), "end": end.strftime(fmt), "no_date_mark": NO_DATE_MARK}
