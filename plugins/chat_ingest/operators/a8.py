"""A8Chat: the Timescale analytics tables → staging, by COPY from database to database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING

from chat_ingest.operators.load import ExtractLoadOperator
from chat_ingest.sources import a8

if TYPE_CHECKING:
    from chat_ingest.landing.batch import Extraction
    from chat_ingest.tablespec import TableSpec

#: What the extraction hands the loader at a time.  COPY TO STDOUT yields one message per
#: row; passing rows one by one through the loader's prefetch queue cost 5× the COPY itself.
CHUNK_BYTES = 1 << 20


class A8ToStagingOperator(ExtractLoadOperator):
    """Land one A8 table's ``[start, end)`` on ``time`` (one bot, or the whole table when it has no bot).

    ``COPY (SELECT … WHERE time >= %s AND time < %s) TO STDOUT`` streams rows from A8
    in a read-only transaction, and the bytes go straight into the staging loader's
    COPY: nothing is parsed in between and memory stays bounded.  A8 rows carry no
    reliable ids, so the loader replaces the window (per bot where there is one) -- unless A8's
    rows of the window digest exactly as staging's do: then a rerun reads and rewrites nothing.
    """

    tables = a8.TABLES
    tenant_label = "bot"

    def __init__(self, *, a8_conn_id: str = "a8_timescale", **kwargs) -> None:
        super().__init__(**kwargs)
        self.a8_conn_id = a8_conn_id

    def extraction(self, spec: TableSpec, start: dt.datetime, end: dt.datetime) -> Extraction:
        """The A8 table checked (it exists, no spec column missing) and read by COPY (text format)."""
        from airflow.sdk.exceptions import AirflowFailException

        from chat_ingest.landing.batch import Extraction, check_source_columns

        with self._connect() as conn:
            actual = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s ORDER BY ordinal_position", (spec.name,))]
        if not actual:
            raise AirflowFailException(f"A8 table {spec.name!r} does not exist in {self.a8_conn_id}")
        ignored = check_source_columns(spec, actual, f"A8 table {spec.name}")
        return Extraction(start, end, copy=lambda: self._copy_out(spec, start, end), copy_format="text",
                          digest=lambda: self._digest(spec, start, end), digest_exact=True, ignored_columns=ignored)

    def lineage_inputs(self) -> list:
        from chat_ingest.lineage import postgres_table

        return [postgres_table(self.a8_conn_id, "public", spec.name) for spec in self.landed_specs]

    def _connect(self):
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        conn = PostgresHook(postgres_conn_id=self.a8_conn_id).get_conn()
        conn.read_only = True  # the vendor's database is only ever read
        return conn

    def _selection(self, spec: TableSpec, start: dt.datetime, end: dt.datetime):
        """The WHERE clause of the window (and bot), and its parameters."""
        from psycopg import sql

        where = sql.SQL("{cursor} >= %s AND {cursor} < %s").format(cursor=sql.Identifier(spec.cursor))
        params: list = [start, end]
        if spec.tenant_column and self.tenant is not None:
            where = sql.SQL("{} AND {} = %s").format(where, sql.Identifier(spec.tenant_column))
            params.append(self.tenant)
        return where, params

    def _digest(self, spec: TableSpec, start: dt.datetime, end: dt.datetime) -> tuple[int, int] | None:
        """A8's rows of the window, digested exactly as staging's are; None when A8 cannot (a value
        that does not cast to staging's type: the load then quarantines it; a server too old for the
        digest's hash function)."""
        import psycopg
        from psycopg import sql

        from chat_ingest.landing.digest import digest_sql

        where, params = self._selection(spec, start, end)
        with self._connect() as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            try:
                rows, hash_sum = conn.execute(
                    digest_sql(spec, sql.Identifier(spec.name), where, exact=True), params).fetchone()
            # PostgreSQL < 14 has no hash_record_extended
            except (psycopg.DataError, psycopg.errors.UndefinedFunction) as exc:
                self.log.info("A8 %s: no digest (%s); loading the window", spec.name, str(exc).splitlines()[0])
                return None
        return rows, int(hash_sum) % (1 << 64)

    def _copy_out(self, spec: TableSpec, start: dt.datetime, end: dt.datetime) -> Iterator[bytes]:
        from psycopg import sql

        self.log.info("extracting A8 %s where time in [%s, %s)%s", spec.name, start, end,
                      f" for bot {self.tenant}" if self.tenant else "")
        where, params = self._selection(spec, start, end)
        query = sql.SQL("COPY (SELECT {cols} FROM {table} WHERE {where}) TO STDOUT (FORMAT text)").format(
            cols=sql.SQL(", ").join(map(sql.Identifier, spec.column_names)), table=sql.Identifier(spec.name),
            where=where)
        with self._connect() as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            with conn.cursor().copy(query, params) as copy:
                chunk = bytearray()
                for row in copy:  # COPY TO STDOUT hands over one message per row
                    chunk += row
                    if len(chunk) >= CHUNK_BYTES:
                        yield bytes(chunk)
                        chunk.clear()
                if chunk:
                    yield bytes(chunk)
