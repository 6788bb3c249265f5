"""Botslovers: ClickHouse tables per company → staging."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING

from chat_ingest.operators.load import ExtractLoadOperator
from chat_ingest.sources import botslovers

if TYPE_CHECKING:
    from chat_ingest.tablespec import TableSpec


def extraction_query(spec: TableSpec, source_table: str) -> str:
    """SELECT of the spec's columns over ``[start, end)`` on its cursor; values bound server-side.

    DateTime values travel as UTC text so no time zone (the server's or ours) can
    shift them on the way into staging's ``timestamptz``.
    """
    from chat_ingest.hooks.clickhouse import check_identifier

    check_identifier(source_table, "table name")
    select = ", ".join(
        f"toString(`{c.name}`, 'UTC') AS `{c.name}`" if "DateTime" in c.source_type else f"`{c.name}`"
        for c in spec.columns
    )
    # The filter names the table's column, not the same-named text alias of the SELECT list.
    return (f"SELECT {select} FROM `{source_table}` AS src "
            f"WHERE src.`{spec.cursor}` >= {{start:DateTime('UTC')}} AND src.`{spec.cursor}` < {{end:DateTime('UTC')}}")


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

    def extract(self, spec: TableSpec, start: dt.datetime, end: dt.datetime) -> Iterator:
        from airflow.sdk.exceptions import AirflowFailException

        from chat_ingest.hooks.clickhouse import ClickHouseHttpHook, check_identifier
        from chat_ingest.staging import check_source_columns

        company = check_identifier(self.tenant, "company")
        source_table = f"{spec.name}_{company}"
        hook = ClickHouseHttpHook(clickhouse_conn_id=self.clickhouse_conn_id)
        if source_table not in hook.existing_tables([source_table]):
            raise AirflowFailException(f"Botslovers table {source_table!r} does not exist for company {company!r}; "
                                       "check include/config/sources.yaml")
        self.ignored_columns = check_source_columns(spec, hook.table_columns(source_table), source_table)
        if spec.version_column:
            start = start - self.agent_log_lookback
        self.log.info("extracting %s where %s in [%s, %s)", source_table, spec.cursor, start, end)
        fmt = "%Y-%m-%d %H:%M:%S"
        return hook.stream_arrow(
            extraction_query(spec, source_table),
            parameters={"start": start.strftime(fmt), "end": end.strftime(fmt)},
            settings={"max_block_size": self.max_block_size},
        )
