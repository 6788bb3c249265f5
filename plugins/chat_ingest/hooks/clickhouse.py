"""ClickHouseHttpHook: the Botslovers ClickHouse over HTTP(S), streamed in Arrow batches or raw CSV."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from airflow.providers.clickhousedb.hooks.clickhouse import ClickHouseHook
from airflow.sdk.exceptions import AirflowFailException

from chat_ingest.names import UnsafeIdentifierError, check_identifier

__all__ = ["ClickHouseAuthenticationError", "ClickHouseHttpHook", "UnsafeIdentifierError", "check_identifier"]


class ClickHouseAuthenticationError(AirflowFailException):
    """The server refused the connection's credentials: a retry cannot fix that."""


class ClickHouseHttpHook(ClickHouseHook):
    """The provider's ClickHouse hook, plus what a bulk extraction over HTTP(S) needs.

    Connection handling (host, port, basic auth, ``secure``/``verify`` for HTTPS on
    443, session settings) is the provider's.  This hook adds an allow-listed
    table lookup against ``system.columns`` and an Arrow stream whose values are
    bound server-side (``{name:Type}`` placeholders), so a day is never held whole
    in memory and no value is ever spliced into SQL.
    """

    conn_name_attr = "clickhouse_conn_id"
    default_conn_name = "botslovers_clickhouse"
    conn_type = "clickhouse"
    hook_name = "ClickHouse over HTTP(S)"

    def get_client(self):
        """The provider's client; refused credentials fail the task at once instead of being retried."""
        from clickhouse_connect.driver.exceptions import DatabaseError

        try:
            return super().get_client()
        except DatabaseError as exc:
            if "Authentication failed" in str(exc) or "AUTHENTICATION_FAILED" in str(exc):
                raise ClickHouseAuthenticationError(
                    f"ClickHouse refused the credentials of connection {getattr(self, self.conn_name_attr)!r}: "
                    "Authentication "
                    "failed (check the login and password; not retried)") from None
            raise

    def test_connection(self) -> tuple[bool, str]:
        try:
            client = self.get_client()
            try:
                version = client.server_version
                client.query("SELECT 1")
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 -- the UI shows the message; it never carries the password
            return False, str(exc)
        return True, f"Connection successfully tested (ClickHouse {version})"

    def table_columns(self, table: str) -> dict[str, str]:
        """Column name → ClickHouse type of ``table``, as the server describes it now; empty when
        the table does not exist (or the login may not see it), as no ClickHouse table lacks columns.
        One query answers both (each query here opens a client: a round trip or two of its own)."""
        check_identifier(table, "table name")
        client = self.get_client()
        try:
            result = client.query(
                "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
                "ORDER BY position", parameters={"t": table})
            return dict(result.result_rows)
        finally:
            client.close()

    def stream_raw(self, query: str, fmt: str, parameters: dict[str, Any] | None = None,
                   settings: dict[str, Any] | None = None, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """Yield the bytes of ``query`` in the server's output format ``fmt`` (e.g. ``CSV``) as they
        arrive, values bound server-side: for a consumer that reads the format itself (COPY).

        A stream that ends before its last chunk (a dying server or proxy) raises
        ``ConnectionError``: the consumer must not take what arrived for the whole result.
        """
        from urllib3.exceptions import ProtocolError

        client = self.get_client()
        received = 0
        try:
            response = client.raw_stream(query, parameters=parameters, settings=settings, fmt=fmt)
            try:
                for chunk in response.stream(chunk_bytes):
                    received += len(chunk)
                    yield chunk
            except ProtocolError as exc:
                raise ConnectionError(f"the ClickHouse connection broke after {received:,} bytes of the {fmt} "
                                      f"result ({exc}); nothing of it is kept") from exc
            finally:
                response.close()
        finally:
            client.close()

    def first_row(self, query: str, parameters: dict[str, Any] | None = None) -> tuple:
        """The first row of ``query`` (an aggregate), values bound server-side."""
        client = self.get_client()
        try:
            return tuple(client.query(query, parameters=parameters).result_rows[0])
        finally:
            client.close()

    def stream_arrow(self, query: str, parameters: dict[str, Any] | None = None,
                     settings: dict[str, Any] | None = None) -> Iterator:
        """Yield ``pyarrow.RecordBatch`` blocks of ``query`` as the server sends them."""
        client = self.get_client()
        try:
            with client.query_arrow_stream(query, parameters=parameters, settings=settings) as stream:
                yield from stream
        finally:
            client.close()
