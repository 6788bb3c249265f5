"""A ClickHouse HTTP endpoint backed by chdb: the Botslovers stand-in.

It speaks enough of ClickHouse's HTTP interface for the vendor's documented curl
calls and for ``clickhouse-connect`` alike: the SQL comes from the ``query`` URL
parameter and/or the request body, ``param_<name>`` URL parameters bind
``{name:Type}`` placeholders server-side, known ClickHouse settings passed as URL
parameters are applied to the query, credentials come by basic auth, the
``X-ClickHouse-User``/``-Key`` headers or ``user``/``password`` parameters, and
errors come back as ``Code: N. DB::Exception: …`` with ``X-ClickHouse-Exception-Code``.
Block formats (Native, CSV, TabSeparated, …) are streamed chunk by chunk with
chunked transfer encoding, so a large result never sits whole in this process.

One chdb session serves every request; queries are serialised by a lock, which
is what a single-node sandbox needs.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from chdb import session as chdb_session

#: URL parameters that are part of the HTTP protocol, not query settings.
_PROTOCOL_PARAMS = {
    "query", "database", "user", "password", "default_format", "query_id", "session_id", "session_timeout",
    "session_check", "compress", "decompress", "buffer_size", "wait_end_of_query", "client_protocol_version",
    "enable_http_compression", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
}
#: Formats whose chunks concatenate into a valid stream.
_CONCATENATING_FORMATS = {
    "native", "rowbinary", "csv", "tabseparated", "tsv", "jsoneachrow", "jsoncompacteachrow", "tabseparatedraw",
}
_FORMAT_AT_END = re.compile(r"\s+FORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_SETTING_VALUE = re.compile(r"^[A-Za-z0-9_.\-]*$")
_READ_ONLY_STATEMENTS = ("select", "with", "show", "describe", "desc", "exists", "explain")
_HTTP_STATUS_BY_CODE = {60: 404, 81: 404, 62: 400, 46: 400, 47: 400, 164: 403, 516: 403, 194: 401}


class ClickHouseError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _StreamCut(Exception):
    """A scripted fault: the result stream stops here, connection dropped."""


class ChdbBackend:
    """The chdb session, its lock and the users allowed in."""

    def __init__(self, path: str, users: dict[str, tuple[str, bool]]) -> None:
        #: user -> (password, read_only)
        self.users = users
        self.session = chdb_session.Session(path)
        self.lock = threading.Lock()
        names = self.session.query("SELECT name FROM system.settings", "TabSeparated").bytes().decode()
        self.known_settings = set(names.split())

    def execute(self, sql: str, fmt: str = "TabSeparated") -> bytes:
        with self.lock:
            return self.session.query(sql, fmt).bytes()

    def close(self) -> None:
        self.session.close()


def _error_code(message: str) -> int:
    m = re.search(r"Code:\s*(\d+)", message)
    return int(m.group(1)) if m else 1000


class ClickHouseHandler(BaseHTTPRequestHandler):
    #: Chunks this response may still send before a scripted cut (None: no cut).
    chunks_left: int | None = None
    server: "ClickHouseHTTPServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep the sandbox quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._handle(body=b"")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self._handle(body=self.rfile.read(length) if length else b"")

    # --------------------------------------------------------------------------------------

    def _credentials(self, params: dict[str, str]) -> tuple[str, str]:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            return user, password
        if self.headers.get("X-ClickHouse-User"):
            return self.headers["X-ClickHouse-User"], self.headers.get("X-ClickHouse-Key", "")
        return params.get("user", "default"), params.get("password", "")

    def _handle(self, body: bytes) -> None:
        url = urlsplit(self.path)
        if url.path in ("/ping", "/ping/"):
            self._send(200, b"Ok.\n", "text/plain")
            return
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            user, password = self._credentials(params)
            backend = self.server.backend
            account = backend.users.get(user)
            if account is None or account[0] != password:
                raise ClickHouseError(
                    516, f"{user}: Authentication failed: password is incorrect, or there is no user with such name."
                )
            if url.path == "/_sandbox/faults":
                self._post_fault(account, body)
                return
            sql = "\n".join(part for part in (params.get("query", ""), body.decode("utf-8")) if part.strip())
            if not sql.strip():
                raise ClickHouseError(62, "Empty query.")
            if account[1] and not sql.lstrip(" (\n\t").lower().startswith(_READ_ONLY_STATEMENTS):
                raise ClickHouseError(164, f"{user}: Cannot execute query in readonly mode.")
            sql, fmt = self._split_format(sql, params.get("default_format") or "TabSeparated")
            sql = self._apply_settings(sql, params)
            bound = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            self._run(sql, fmt, bound, query_id)
        except ClickHouseError as exc:
            self._send_error(exc.code, str(exc))
        except Exception as exc:  # noqa: BLE001 -- chdb reports every SQL error as an exception with the server's text
            message = str(exc)
            self._send_error(_error_code(message), message)

    def _post_fault(self, account: tuple[str, bool], body: bytes) -> None:
        """Tests script a stream cut: ``{"cut_after_chunks": N}`` drops the connection of the next
        extraction stream (Arrow, CSV or TabSeparated) that reaches N chunks, after them, without
        the closing chunk, as a dying server or proxy would."""
        if account[1]:
            raise ClickHouseError(164, "faults are scripted by the admin user only")
        self.server.cuts.append(int(json.loads(body)["cut_after_chunks"]))
        self._send(200, b"Ok.\n", "text/plain")

    @staticmethod
    def _split_format(sql: str, default: str) -> tuple[str, str]:
        m = _FORMAT_AT_END.search(sql)
        if m:
            return sql[: m.start()], m.group(1)
        return sql, default

    def _apply_settings(self, sql: str, params: dict[str, str]) -> str:
        known = self.server.backend.known_settings
        settings = [
            f"{k}={v if v.lstrip('-').replace('.', '', 1).isdigit() else repr(v)}"
            for k, v in params.items()
            if k not in _PROTOCOL_PARAMS and not k.startswith("param_") and k in known and _SETTING_VALUE.match(v)
        ]
        if not settings or not sql.lstrip(" (\n\t").lower().startswith(("select", "with")):
            return sql
        if re.search(r"\bSETTINGS\b", sql, re.IGNORECASE):
            return sql
        return f"{sql.rstrip().rstrip(';')} SETTINGS {', '.join(settings)}"

    def _run(self, sql: str, fmt: str, bound: dict[str, str], query_id: str) -> None:
        backend = self.server.backend
        headers = {
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Timezone": "UTC",
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": "chat-ingest-sandbox",
        }
        with backend.lock:
            streamable = fmt.lower() in _CONCATENATING_FORMATS or fmt.lower() == "arrowstream"
            if streamable and sql.lstrip(" (\n\t").lower().startswith(("select", "with")):
                stream = backend.session.send_query(sql, fmt, params=bound or None)
                try:
                    first = next(iter(stream), None)
                except Exception:
                    stream.close()
                    raise
                if first is None and fmt.lower() == "arrowstream":
                    # An empty result is still a stream with a schema, as ClickHouse sends it.
                    stream.close()
                    result = backend.session.query(sql, fmt, params=bound or None)
                    self._send(200, result.bytes(), "application/octet-stream", headers)
                else:
                    self._stream(stream, first, fmt, headers)
            else:
                result = backend.session.query(sql, fmt, params=bound or None)
                headers["X-ClickHouse-Summary"] = json.dumps(
                    {"read_rows": str(result.rows_read()), "read_bytes": str(result.bytes_read())}
                )
                self._send(200, result.bytes(), "text/plain; charset=UTF-8", headers)

    def _stream(self, stream, first, fmt: str, headers: dict[str, str]) -> None:
        self.send_response(200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        arrow = fmt.lower() == "arrowstream"
        extraction = arrow or fmt.lower() in ("csv", "tabseparated")
        # a stream too short to reach the cut (a lookup) leaves the fault for the next one
        self.chunks_left = self.server.cuts[0] if extraction and self.server.cuts else None
        try:
            if arrow:
                self._stream_arrow(stream, first)
            else:
                if first is not None:
                    self._chunk(first.bytes())
                for part in stream:
                    self._chunk(part.bytes())
            self.wfile.write(b"0\r\n\r\n")
        except _StreamCut:
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        finally:
            stream.close()

    def _stream_arrow(self, stream, first) -> None:
        """chdb emits each chunk as a whole Arrow IPC stream; re-frame them as one stream."""
        import pyarrow as pa

        writer = None
        sink = io.BytesIO()
        for part in itertools.chain([first] if first is not None else [], stream):
            reader = pa.ipc.open_stream(io.BytesIO(part.bytes()))
            if writer is None:
                writer = pa.ipc.new_stream(sink, reader.schema)
            for batch in reader:
                writer.write_batch(batch)
                self._chunk(sink.getvalue())
                sink.seek(0)
                sink.truncate()
        if writer is not None:
            writer.close()
            self._chunk(sink.getvalue())

    def _chunk(self, data: bytes) -> None:
        if data and self.chunks_left is not None:
            if self.chunks_left == 0:
                self.server.cuts.pop(0)
                raise _StreamCut
            self.chunks_left -= 1
        if data:
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")

    def _send(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, code: int, message: str) -> None:
        if not message.startswith("Code:"):
            message = f"Code: {code}. DB::Exception: {message}"
        status = _HTTP_STATUS_BY_CODE.get(code, 500)
        self._send(status, (message + "\n").encode(), "text/plain; charset=UTF-8",
                   {"X-ClickHouse-Exception-Code": str(code)})


class ClickHouseHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], backend: ChdbBackend) -> None:
        super().__init__(address, ClickHouseHandler)
        #: Scripted stream cuts (see ``_post_fault``), played one per result stream.
        self.cuts: list[int] = []
        self.backend = backend
