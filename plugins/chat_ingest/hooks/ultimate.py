"""UltimateExportHook: the Ultimate Data Export API (seed 002), an HttpHook.

Connection (`ultimate_export`, type ``ultimate_export``, registered by this
project's provider entry point so the UI shows a form): the API's base as host (with a path
prefix where the base has one) and port/schema, the API token as password, and the fields
``organization_id`` (sent as the ``organizationid`` header), ``bot_id`` (the bot asked for when a
caller names none, e.g. by ``test_connection``) and ``api_version`` (:data:`API_VERSIONS`).  The
token is sent as the ``authorization`` header and is never logged.

The vendor (Ultimate, now Zendesk AI agents) serves the export at three bases -- ``https://api.ultimate.ai``
(EU), ``https://api.us.ultimate.ai`` (US) and ``https://<subdomain>.zendesk.com/ai-agents/api``
(Zendesk accounts) -- as ``v3`` ("enhanced Gen3", current) and ``v2`` (legacy), with the same headers
and body.  A bot and day without an export answer 404 (a quiet day, a day before the bot existed):
no export, not an error (:meth:`UltimateExportHook.get_signed_urls` returns None).
"""

from __future__ import annotations

import codecs
import datetime as dt
import functools
import gzip
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import requests
import tenacity
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk.exceptions import AirflowFailException

#: The export's versions, newest first: the first is what a connection without ``api_version`` asks.
API_VERSIONS = ("v3", "v2")


def signed_urls_endpoint(api_version: str) -> str:
    """The path, below the API's base, that hands out a day's signed URLs."""
    return f"/data-export/{api_version}/get-signed-urls"


#: The vendor keeps about this many days of exports.
RETENTION_DAYS = 30
_RETRY_STATUSES = {429, 500, 502, 503, 504}
_TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class UltimateExportError(AirflowFailException):
    """The API refused the request for a reason a retry cannot fix (4xx, or an out-of-window date)."""


class _Transient(Exception):
    """A failure a retry may fix: 429, 5xx, a reset or a timeout (with the vendor's Retry-After)."""

    def __init__(self, failure: str, retry_after: float | None = None) -> None:
        super().__init__(failure)
        self.retry_after = retry_after


class SignedUrlExpired(Exception):
    """A download URL expired before (or while) it was fetched: ask for fresh URLs."""


@dataclass
class BadLine:
    """A record that cannot land (does not parse, is not an object, holds what PostgreSQL cannot
    store), kept with its raw text for quarantine."""

    raw: str
    reason: str


class Document(str):
    """A record that can land: its own JSON text (what lands), with its top-level field names, which
    the parse found anyway (``fields``: the loader maps them to columns without parsing again)."""

    fields: tuple[str, ...]

    def __new__(cls, text: str, fields: tuple[str, ...]) -> Document:
        document = super().__new__(cls, text)
        document.fields = fields
        return document


class UltimateExportHook(HttpHook):
    """Signed URLs per bot and day, and a streaming parse of each export file.

    Retries 429 (honouring ``Retry-After``), 5xx, connection resets and timeouts with bounded
    exponential backoff (tenacity, as ``HttpHook.run_with_advanced_retry`` uses); never retries
    400/401/403/404.
    """

    conn_name_attr = "http_conn_id"
    default_conn_name = "ultimate_export"
    conn_type = "ultimate_export"
    hook_name = "Ultimate Data Export API"
    #: Connection fields of this type (see chat_ingest.provider); they are not HTTP headers.
    connection_fields = ("organization_id", "bot_id", "api_version")

    def __init__(self, http_conn_id: str = default_conn_name, *, max_attempts: int = 5, backoff_seconds: float = 1.0,
                 max_backoff_seconds: float = 60.0, timeout: tuple[float, float] = (10.0, 300.0),
                 today: dt.date | None = None) -> None:
        super().__init__(method="POST", http_conn_id=http_conn_id)
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.timeout = timeout
        self.today = today
        self._session: requests.Session | None = None
        self._base: str | None = None

    # -- plumbing -------------------------------------------------------------------------------------

    def _api(self) -> requests.Session:
        if self._session is None:
            conn = self.get_connection(self.http_conn_id)
            organization_id = self._field(conn.extra_dejson, "organization_id")
            if not conn.password:
                raise UltimateExportError(f"connection {self.http_conn_id!r} has no API token (password)")
            if not organization_id:
                raise UltimateExportError(f"connection {self.http_conn_id!r} has no organization id "
                                          "(extra field organization_id)")
            self._session = self.get_conn(headers={"authorization": conn.password,
                                                   "organizationid": str(organization_id)})
            self._base = api_base(conn.host, conn.port, conn.schema)
        return self._session

    @functools.cached_property
    def api_version(self) -> str:
        """The connection's ``api_version`` (default: the newest, :data:`API_VERSIONS`), checked."""
        version = self._field(self.get_connection(self.http_conn_id).extra_dejson, "api_version") or API_VERSIONS[0]
        if version not in API_VERSIONS:
            raise UltimateExportError(f"connection {self.http_conn_id!r}: api_version {version!r} is not one of "
                                      f"{', '.join(API_VERSIONS)}")
        return version

    @property
    def endpoint(self) -> str:
        """The signed-URL endpoint this connection asks, below its base (what lineage names)."""
        return signed_urls_endpoint(self.api_version)

    def _configure_session_from_extra(self, session, connection, extra_options):
        """The http provider sends unknown extras as headers; this type's own fields are not headers."""
        session = super()._configure_session_from_extra(session, connection, extra_options)
        for field in self.connection_fields:
            session.headers.pop(field, None)
            session.headers.pop(f"extra__{self.conn_type}__{field}", None)
        return session

    @classmethod
    def _field(cls, extra: dict, name: str) -> str | None:
        """A connection field, stored bare or with the UI's ``extra__<type>__`` prefix."""
        return extra.get(name) or extra.get(f"extra__{cls.conn_type}__{name}")

    def _request(self, method: str, url: str, **kwargs) -> requests.Response:
        """One call with the retry policy (tenacity); the response is returned open (for streaming) on
        success, or with a 4xx status for the caller to turn into a clear, final error."""
        session = self._api()

        def attempt() -> requests.Response:
            try:
                response = session.request(method, url, timeout=self.timeout, **kwargs)
            except _TRANSIENT_ERRORS as exc:
                failure = type(exc).__name__
                if isinstance(exc, requests.Timeout):
                    failure += f" (timed out after {self.timeout[0]:g}s to connect / {self.timeout[1]:g}s to read)"
                raise _Transient(failure) from exc
            if response.status_code in _RETRY_STATUSES:
                retry_after = response.headers.get("Retry-After", "")
                response.close()
                raise _Transient(f"HTTP {response.status_code}",
                                 float(retry_after) if retry_after.isdigit() else None)
            return response

        backoff = tenacity.wait_exponential(multiplier=self.backoff_seconds, max=self.max_backoff_seconds)

        def wait(state: tenacity.RetryCallState) -> float:
            """The vendor's Retry-After when it sent one (capped), else exponential backoff."""
            told = state.outcome.exception().retry_after
            return min(told, self.max_backoff_seconds) if told is not None else backoff(state)

        def give_up(state: tenacity.RetryCallState):
            raise RuntimeError(f"Ultimate API: {state.outcome.exception()} on {method} {_redact(url)}; gave up "
                               f"after {state.attempt_number} attempts") from state.outcome.exception()

        def warn(state: tenacity.RetryCallState) -> None:
            self.log.warning("Ultimate API: %s on %s %s (attempt %d/%d); retrying in %.1fs",
                             state.outcome.exception(), method, _redact(url), state.attempt_number,
                             self.max_attempts, state.next_action.sleep)

        return tenacity.Retrying(retry=tenacity.retry_if_exception_type(_Transient), wait=wait,
                                 stop=tenacity.stop_after_attempt(self.max_attempts), before_sleep=warn,
                                 retry_error_callback=give_up)(attempt)

    # -- the API ----------------------------------------------------------------------------------------

    def check_retention(self, day: dt.date) -> None:
        """Refuse a date the vendor no longer (or does not yet) keep, before any request."""
        today = self.today or dt.datetime.now(dt.timezone.utc).date()
        oldest = today - dt.timedelta(days=RETENTION_DAYS)
        if day < oldest:
            raise UltimateExportError(
                f"Ultimate keeps exports for {RETENTION_DAYS} days: {day} is older than the oldest available day "
                f"({oldest}); it can no longer be loaded from the vendor")
        if day >= today:
            raise UltimateExportError(f"the Ultimate export for {day} is not complete yet (today is {today} UTC)")

    def get_signed_urls(self, day: dt.date, bot_id: str | None = None, ttl_minutes: int = 60) -> list[str] | None:
        """The signed URLs of ``day``'s export of ``bot_id`` (default: the connection's bot); None when
        the vendor has no export of that bot and day (HTTP 404, logged with the vendor's words).

        The list is read from ``signedUrls`` (v2) or ``urls`` (v3), whichever the answer holds."""
        self.check_retention(day)
        self._api()  # resolves the base from the connection
        bot_id = bot_id or self._field(self.get_connection(self.http_conn_id).extra_dejson, "bot_id")
        if not bot_id:
            raise UltimateExportError(f"no bot id: pass one or set the bot_id field of {self.http_conn_id!r}")
        response = self._request("POST", self._base + self.endpoint, headers={"botid": bot_id},
                                 json={"date": day.isoformat(), "ttl": ttl_minutes})
        if response.status_code == 404:
            self.log.warning("Ultimate: no export of bot %r for %s (HTTP 404: %s): a day without conversations, "
                             "or before the bot existed; a bot that never has one may be misnamed", bot_id, day,
                             _vendor_detail(response))
            return None
        _raise_for_vendor(response, f"signed URLs for bot {bot_id!r} and {day}")
        payload = response.json()
        urls = payload.get("signedUrls", payload.get("urls")) if isinstance(payload, dict) else None
        if not isinstance(urls, list):
            raise UltimateExportError(f"unexpected answer for {day}: no list of signed URLs "
                                      f"({sorted(payload) if isinstance(payload, dict) else type(payload).__name__})")
        return urls

    def test_connection(self) -> tuple[bool, str]:
        """Ask for yesterday's URLs of the connection's bot (or of a placeholder bot when it names none):
        a token or organization the API refuses fails (401/403), a 404 passed them."""
        try:
            extra = self.get_connection(self.http_conn_id).extra_dejson
            bot = self._field(extra, "bot_id") or "connection-test"
            yesterday = (self.today or dt.datetime.now(dt.timezone.utc).date()) - dt.timedelta(days=1)
            urls = self.get_signed_urls(yesterday, bot, ttl_minutes=1)
        except Exception as exc:  # noqa: BLE001 -- the Test button shows why
            return False, str(exc)
        where = f"{self._base}{self.endpoint}"
        if urls is None:
            return True, (f"Connection successfully tested at {where} (token and organization accepted; "
                          f"no export of bot {bot!r} for {yesterday})")
        return True, f"Connection successfully tested at {where} ({len(urls)} export file(s) of {yesterday})"

    def iter_documents(self, url: str) -> Iterator[Document | BadLine]:
        """Stream one export file: each record's own JSON text, checked, the file never held whole.

        The file is a JSON array or JSON lines, gzip or not.  A record comes back as its text
        (a :class:`Document`) when it is a JSON object PostgreSQL's ``jsonb`` can store (the caller lands the text and
        the warehouse projects the tables from it), or as a :class:`BadLine` (to quarantine)
        when it is not: a line that does not parse, is not valid UTF-8, or holds what ``jsonb``
        refuses.  A broken JSON array cannot be resynchronised and fails the file.
        """
        response = self._request("GET", url, stream=True)
        if response.status_code == 403 and "expired" in response.text.lower():
            raise SignedUrlExpired(_redact(url))
        _raise_for_vendor(response, f"download {_redact(url)}")
        with response:
            response.raw.decode_content = True  # HTTP-level compression; a .gz file is handled below
            body = _Peekable(response.raw)
            buffered = _Peekable(gzip.GzipFile(fileobj=body)) if body.peek(2) == b"\x1f\x8b" else body
            if buffered.first_non_space() == b"[":
                yield from _array_documents(buffered, _redact(url))
            else:
                for line in buffered.lines():
                    try:
                        text = line.decode("utf-8").strip()
                    except UnicodeDecodeError as exc:  # never land a silently mangled value
                        yield BadLine(line.decode("utf-8", errors="replace").strip(),
                                      f"not valid UTF-8: byte 0x{line[exc.start]:02x} at position {exc.start}")
                        continue
                    if text:
                        yield _checked_line(text)


class _Peekable:
    """A byte stream that can look at its first non-blank byte and then be read from the start."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.buffer = b""

    def peek(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.stream.read(1 << 16)
            if not chunk:
                break
            self.buffer += chunk
        return self.buffer[:size]

    def first_non_space(self) -> bytes:
        while not self.buffer.strip():
            chunk = self.stream.read(1 << 16)
            if not chunk:
                return b""
            self.buffer += chunk
        return self.buffer.lstrip()[:1]

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # as io streams do: nothing, not a chunk
            return b""
        if self.buffer:
            cut = len(self.buffer) if size is None or size < 0 else size
            data, self.buffer = self.buffer[:cut], self.buffer[cut:]
            return data
        return self.stream.read(size if size and size > 0 else 1 << 16)

    def lines(self) -> Iterator[bytes]:
        pending = b""
        while chunk := self.read(1 << 16):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            yield from complete
        if pending:
            yield pending


class _Unstorable(ValueError):
    """A JSON value PostgreSQL's ``jsonb`` cannot hold (NaN, Infinity, a number out of range)."""


def _refuse_constant(name: str) -> float:
    raise _Unstorable(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Unstorable(f"the number {text[:40]} is out of range")
    return value


#: Strict JSON, as ``jsonb`` reads it.  It parses each record to find where the record ends and
#: whether it is whole; the record's own text is what lands.
_STRICT = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)
#: Finds where a record the strict parse refused for a value ends (numbers are not converted).
_LENIENT = json.JSONDecoder(parse_constant=str, parse_float=str, parse_int=str)
_SPACE = re.compile(r"[ \t\n\r]*")
#: A ``\u0000`` escape (after an even number of backslashes): ``jsonb`` cannot store a NUL character.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
#: How much of one record an array may buffer before the file is called broken.
MAX_RECORD_CHARS = 32 << 20


def _storable(text: str, value: Any) -> Document | BadLine:
    """``text`` (a parsed record's own JSON) if ``jsonb`` can store it as a record, else why not."""
    if type(value) is not dict:
        return BadLine(text, f"a JSON {type(value).__name__}, not an object")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a byte the file's decoding kept as a surrogate (surrogateescape)
            raw = text.encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")
            return BadLine(raw, f"not valid UTF-8: byte 0x{ord(text[exc.start]) - 0xDC00:02x} "
                                f"at character {exc.start}")
    if "\\u" in text:
        if _NUL_ESCAPE.search(text):
            return BadLine(text, "contains a NUL character (\\u0000), which PostgreSQL cannot store")
        try:
            orjson.loads(text)  # stricter than json about escapes: a lone surrogate is refused
        except orjson.JSONDecodeError as exc:
            return BadLine(text, f"not storable JSON: {exc}")
    return Document(text, tuple(value))


def _checked_line(text: str) -> Document | BadLine:
    """One JSON-lines record, checked."""
    try:
        value = _STRICT.decode(text)
    except json.JSONDecodeError as exc:
        return BadLine(text, f"not valid JSON: {exc.msg} at column {exc.colno}")
    except ValueError as exc:  # _Unstorable, or an integer too long to read
        return BadLine(text, f"not storable JSON: {exc}")
    except RecursionError:
        return BadLine(text, TOO_DEEP)
    return _storable(text, value)


#: The reason a record nested deeper than the parser goes is quarantined (Unless's orjson says
#: "depth limit exceeded" for the same input).
TOO_DEEP = "not storable JSON: nested too deeply (depth limit exceeded)"


def _end_of_value(buf: str, pos: int) -> int | None:
    """Where the JSON object or array at ``pos`` ends, found without recursion (for a record too
    deep to parse); None when ``buf`` ends first.  Only brackets outside strings count."""
    depth, in_string, escaped = 0, False, False
    for index in range(pos, len(buf)):
        char = buf[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def _cut_short(error: json.JSONDecodeError, buffered: int) -> bool:
    """Whether a parse error may only mean the record continues past what is buffered (a string,
    a literal or an escape cut at the chunk's end) rather than a syntax error."""
    return error.msg.startswith("Unterminated string") or error.pos >= buffered - 8


def _array_documents(stream: _Peekable, where: str) -> Iterator[Document | BadLine]:
    """The elements of the JSON array ``stream`` holds, as their own text, read 1 MB at a time.

    Each element is parsed once (to find its end and check it) and handed on as the text it
    was; memory holds a chunk and the element under way.  Bytes that are not UTF-8 are kept
    (``surrogateescape``) so the record holding them is quarantined, not the file failed.
    """
    decode = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape").decode
    buf, pos, eof, read_size = "", 0, False, 1 << 20
    consumed = 0  # characters of the file before ``buf``, for messages

    def more() -> None:
        nonlocal buf, pos, eof, read_size, consumed
        chunk = stream.read(read_size)
        eof = not chunk
        consumed += pos
        buf, pos = buf[pos:] + decode(chunk, final=eof), 0
        read_size = max(1 << 20, len(buf))  # a record larger than a chunk: read ahead geometrically

    def next_char() -> str:
        """The next non-blank character ("" at the end of the file)."""
        nonlocal pos
        while True:
            pos = _SPACE.match(buf, pos).end()
            if pos < len(buf) or eof:
                return buf[pos:pos + 1]
            more()

    def next_record() -> Document | BadLine:
        nonlocal pos
        while True:
            refused, problem = None, None
            try:
                value, end = _STRICT.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                end, problem = None, exc
            except ValueError as exc:  # _Unstorable, or an integer too long to read: skip the record
                refused = f"not storable JSON: {exc}"
                try:
                    _, end = _LENIENT.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    end, problem = None, exc
            except RecursionError:
                refused, end = TOO_DEEP, _end_of_value(buf, pos)
                if end is None and eof:
                    raise broken("it ends inside a record nested too deeply to parse") from None
            if end is not None and (end < len(buf) or eof):  # a number cut at the chunk's end looks whole
                text, pos = buf[pos:end], end
                return BadLine(text, refused) if refused else _storable(text, value)
            if problem is not None and not (eof or _cut_short(problem, len(buf))):
                raise broken(f"{problem.msg} at character {consumed + problem.pos:,} of the file")
            if eof:
                raise broken(f"it ends inside a record: {problem.msg}")
            if len(buf) - pos > MAX_RECORD_CHARS:
                raise broken(f"a record at character {consumed + pos:,} runs past {MAX_RECORD_CHARS >> 20} Mi "
                             "characters")
            more()

    def broken(message: str) -> UltimateExportError:
        return UltimateExportError(f"{where}: the export's JSON array is broken ({message}); "
                                   "a JSON array cannot be resynchronised, so the file is not landed")

    next_char()
    pos += 1  # the "[" the caller saw
    if next_char() == "]":
        pos += 1
    else:
        while True:
            if next_char() == "":
                raise broken("it ends inside the array")
            yield next_record()
            separator = next_char()
            pos += 1
            if separator == "]":
                break
            if separator != ",":
                raise broken(f"expected ',' or ']' after a record, found {separator or 'the end of the file'!r}")
    if next_char():
        raise broken("more data after the array")


def _redact(url: str) -> str:
    """A signed URL without its query (the signature is a credential too)."""
    return url.split("?", 1)[0]


def api_base(host: str | None, port: int | None, schema: str | None) -> str:
    """The API's base URL from a connection's host (a name, or a URL that may carry a path prefix, as
    ``https://acme.zendesk.com/ai-agents/api``), port and schema (default ``https``); no trailing ``/``.

    HttpHook's own base appends the port after the whole host, path included, which breaks a base
    with a prefix."""
    if not host:
        raise UltimateExportError("the connection has no host: the API's base, e.g. https://api.ultimate.ai")
    parts = urlsplit(host if "://" in host else f"{schema or 'https'}://{host}")
    netloc = f"{parts.netloc}:{port}" if port and parts.port is None else parts.netloc
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _vendor_detail(response: requests.Response) -> str:
    """What the vendor said in a refusal (its ``error``, or the start of its text); closes the response."""
    try:
        payload = response.json()
        detail = payload.get("error", response.text) if isinstance(payload, dict) else response.text
    except ValueError:
        detail = response.text[:300]
    response.close()
    return str(detail)[:300]


def _raise_for_vendor(response: requests.Response, what: str) -> None:
    if response.status_code < 400:
        return
    detail = _vendor_detail(response)
    hints = {401: "the API token was refused — check the password of the connection",
             403: "access denied for this organization or URL",
             404: "not found: the file is gone from the vendor's storage"}
    raise UltimateExportError(f"Ultimate API refused {what}: HTTP {response.status_code} {detail}"
                              f"{f' ({hints[response.status_code]})' if response.status_code in hints else ''}")
