"""UltimateExportHook: the Ultimate Data Export API (seed 002), an HttpHook.

Connection (`ultimate_export`, type ``ultimate_export``, registered by this
project's provider entry point so the UI shows a form): host/port/schema of the
API, the API token as password, and the fields ``organization_id`` (sent as the
``organizationid`` header) and ``bot_id`` (the bot asked for when a caller names
none, e.g. by ``test_connection``).  The token is sent as the ``authorization``
header and is never logged.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk.exceptions import AirflowFailException

SIGNED_URLS_ENDPOINT = "/data-export/v2/get-signed-urls"
#: The vendor keeps about this many days of exports.
RETENTION_DAYS = 30
_RETRY_STATUSES = {429, 500, 502, 503, 504}
_TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class UltimateExportError(AirflowFailException):
    """The API refused the request for a reason a retry cannot fix (4xx, or an out-of-window date)."""


class SignedUrlExpired(Exception):
    """A download URL expired before (or while) it was fetched: ask for fresh URLs."""


@dataclass
class BadLine:
    """A JSON-lines record that does not parse, kept with its raw text for quarantine."""

    raw: str
    reason: str


class UltimateExportHook(HttpHook):
    """Signed URLs per bot and day, and a streaming parse of each export file.

    Retries 429 (honouring ``Retry-After``), 5xx, connection resets and timeouts
    with bounded exponential backoff; never retries 400/401/403/404.
    """

    conn_name_attr = "http_conn_id"
    default_conn_name = "ultimate_export"
    conn_type = "ultimate_export"
    hook_name = "Ultimate Data Export API"
    #: Connection fields of this type (see chat_ingest.provider); they are not HTTP headers.
    connection_fields = ("organization_id", "bot_id")

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
        return self._session

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
        """One call with the retry policy; the response is returned open (for streaming) on success."""
        session = self._api()
        for attempt in range(1, self.max_attempts + 1):
            wait = min(self.backoff_seconds * 2 ** (attempt - 1), self.max_backoff_seconds)
            try:
                response = session.request(method, url, timeout=self.timeout, **kwargs)
            except _TRANSIENT_ERRORS as exc:
                failure = type(exc).__name__
                if isinstance(exc, requests.Timeout):
                    failure += f" (timed out after {self.timeout[0]:g}s to connect / {self.timeout[1]:g}s to read)"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in _RETRY_STATUSES:
                    return response  # the caller turns 4xx into a clear, final error
                failure = f"HTTP {response.status_code}"
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    wait = min(float(retry_after), self.max_backoff_seconds)
                response.close()
            if attempt == self.max_attempts:
                raise RuntimeError(f"Ultimate API: {failure} on {method} {_redact(url)}; gave up after "
                                   f"{self.max_attempts} attempts")
            self.log.warning("Ultimate API: %s on %s %s (attempt %d/%d); retrying in %.1fs", failure, method,
                             _redact(url), attempt, self.max_attempts, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")

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

    def get_signed_urls(self, day: dt.date, bot_id: str | None = None, ttl_minutes: int = 60) -> list[str]:
        """The signed URLs of ``day``'s export of ``bot_id`` (default: the connection's bot)."""
        self.check_retention(day)
        self._api()  # resolves base_url from the connection
        bot_id = bot_id or self._field(self.get_connection(self.http_conn_id).extra_dejson, "bot_id")
        if not bot_id:
            raise UltimateExportError(f"no bot id: pass one or set the bot_id field of {self.http_conn_id!r}")
        url = self.base_url + SIGNED_URLS_ENDPOINT
        response = self._request("POST", url, headers={"botid": bot_id},
                                 json={"date": day.isoformat(), "ttl": ttl_minutes})
        _raise_for_vendor(response, f"signed URLs for bot {bot_id!r} and {day}")
        payload = response.json()
        urls = payload.get("signedUrls", payload.get("urls"))
        if not isinstance(urls, list):
            raise UltimateExportError(f"unexpected answer for {day}: no list of signed URLs ({sorted(payload)})")
        return urls

    def test_connection(self) -> tuple[bool, str]:
        """Ask for yesterday's URLs of the connection's bot (or of a placeholder bot when it names none)."""
        try:
            extra = self.get_connection(self.http_conn_id).extra_dejson
            bot = self._field(extra, "bot_id") or "connection-test"
            yesterday = (self.today or dt.datetime.now(dt.timezone.utc).date()) - dt.timedelta(days=1)
            self.get_signed_urls(yesterday, bot, ttl_minutes=1)
        except UltimateExportError as exc:
            if "Bot not found" in str(exc):  # authenticated: only the placeholder bot is unknown
                return True, "Connection successfully tested (token and organization accepted)"
            return False, str(exc)
        except Exception as exc:
            return False, str(exc)
        return True, "Connection successfully tested"

    def iter_records(self, url: str) -> Iterator[dict | BadLine]:
        """Stream one export file: a JSON array or JSON lines, gzip or not, never held whole.

        JSON lines that do not parse come back as :class:`BadLine` (to quarantine);
        a broken JSON array cannot be resynchronised and fails the file.
        """
        import ijson

        response = self._request("GET", url, stream=True)
        if response.status_code == 403 and "expired" in response.text.lower():
            raise SignedUrlExpired(_redact(url))
        _raise_for_vendor(response, f"download {_redact(url)}")
        with response:
            response.raw.decode_content = True  # HTTP-level compression; a .gz file is handled below
            body = _Peekable(response.raw)
            buffered = _Peekable(gzip.GzipFile(fileobj=body)) if body.peek(2) == b"\x1f\x8b" else body
            if buffered.first_non_space() == b"[":
                yield from ijson.items(buffered, "item", use_float=True)
            else:
                for line in buffered.lines():
                    try:
                        text = line.decode("utf-8").strip()
                    except UnicodeDecodeError as exc:  # never land a silently mangled value
                        yield BadLine(line.decode("utf-8", errors="replace").strip(),
                                      f"not valid UTF-8: byte 0x{line[exc.start]:02x} at position {exc.start}")
                        continue
                    if not text:
                        continue
                    try:
                        record = json.loads(text)
                    except json.JSONDecodeError as exc:
                        yield BadLine(text, f"not valid JSON: {exc.msg} at column {exc.colno}")
                        continue
                    if isinstance(record, dict):
                        yield record
                    else:
                        yield BadLine(text, f"a JSON {type(record).__name__}, not an object")


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
        if size == 0:  # ijson probes the stream's type with read(0)
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


def _redact(url: str) -> str:
    """A signed URL without its query (the signature is a credential too)."""
    return url.split("?", 1)[0]


def _raise_for_vendor(response: requests.Response, what: str) -> None:
    if response.status_code < 400:
        return
    try:
        detail: Any = response.json().get("error", response.text)
    except ValueError:
        detail = response.text[:300]
    response.close()
    hints = {401: "the API token was refused — check the password of the connection",
             403: "access denied for this organization or URL",
             404: "not found — check the bot id"}
    raise UltimateExportError(f"Ultimate API refused {what}: HTTP {response.status_code} {detail}"
                              f"{f' ({hints[response.status_code]})' if response.status_code in hints else ''}")
