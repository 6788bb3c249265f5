"""The Ultimate Data Export API stand-in (seed 002).

``POST /data-export/v3/get-signed-urls`` (the current, "enhanced Gen3" export) and
``POST /data-export/v2/get-signed-urls`` (legacy), each also under the Zendesk base's prefix
``/ai-agents/api``, with headers ``authorization`` (the API token, bare or as ``Bearer``),
``organizationid`` and ``botid`` and a JSON body ``{"date": "YYYY-MM-DD", "ttl": minutes}``,
answer one HMAC-signed download URL per export file of that bot and day, valid for ``ttl``
minutes: v2 as ``{"date": ..., "signedUrls": [...]}``, v3 as ``{"date": ..., "urls": [...]}``,
as the live v3 answers, and a day without an export as 404 (v2: an empty list).  Like the
vendor it keeps only the last ``retention_days`` days and refuses older dates.

Export files come from the dataset: ``ultimate/<bot_id>/<date>.json`` (a JSON
array), ``.jsonl`` (JSON lines), optionally ``.gz``, or a folder
``ultimate/<bot_id>/<date>/`` of such parts.  They are streamed from disk.

Tests inject vendor misbehaviour (429 with Retry-After, 5xx, dropped
connections, slow answers, a file the vendor has not finished building: ``withhold_records``
serves a download without its last records, as a file that grows after a first read) through
``POST /_sandbox/faults``, guarded by the sandbox's admin token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

#: The signed-URL endpoint of each API version.
SIGNED_URLS_PATHS = {version: f"/data-export/{version}/get-signed-urls" for version in ("v2", "v3")}
#: The path prefix of the Zendesk base (``https://<subdomain>.zendesk.com/ai-agents/api``).
ZENDESK_PREFIX = "/ai-agents/api"
EXPORT_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


@dataclass
class Fault:
    """One scripted misbehaviour, applied to the next ``times`` matching requests."""

    target: str  # "signed-urls" or "download"
    status: int = 500
    times: int = 1
    retry_after: int | None = None
    drop_connection: bool = False
    delay_seconds: float = 0.0
    message: str | None = None
    #: A download served without its last this many records (a file still being built); 0: not this fault.
    withhold_records: int = 0
    #: Matching requests to let through before this fault plays (a fault of a later request).
    skip: int = 0


@dataclass
class UltimateConfig:
    export_root: Path
    token: str
    organization_id: str
    admin_token: str
    retention_days: int = 30
    today: dt.date | None = None  # None: the real UTC date
    #: How clients reach this server, for the signed URLs (default: the bound address).
    public_url: str | None = None


class UltimateHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: UltimateConfig) -> None:
        super().__init__(address, UltimateHandler)
        self.config = config
        self.signing_key = secrets.token_bytes(32)
        self.faults: list[Fault] = []
        self.faults_lock = threading.Lock()
        self.request_log: list[tuple[str, int]] = []

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return self.config.public_url or f"http://{host}:{port}"

    def take_fault(self, target: str, withholding: bool = False) -> Fault | None:
        """The next queued fault for ``target``: one that withholds records, or (by default) any other."""
        with self.faults_lock:
            for fault in self.faults:
                if fault.target == target and fault.times > 0 and bool(fault.withhold_records) == withholding:
                    if fault.skip:
                        fault.skip -= 1
                        return None
                    fault.times -= 1
                    return fault
        return None

    def export_files(self, bot_id: str, day: dt.date) -> list[Path]:
        bot_dir = self.config.export_root / bot_id
        files = [bot_dir / f"{day.isoformat()}{suffix}" for suffix in EXPORT_SUFFIXES]
        parts_dir = bot_dir / day.isoformat()
        parts = sorted(p for p in parts_dir.iterdir() if p.name.endswith(EXPORT_SUFFIXES)) if parts_dir.is_dir() else []
        return [f for f in files if f.is_file()] + parts

    def sign(self, rel_path: str, expires: int) -> str:
        return hmac.new(self.signing_key, f"{rel_path}:{expires}".encode(), hashlib.sha256).hexdigest()


class UltimateHandler(BaseHTTPRequestHandler):
    server: UltimateHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass

    # -- plumbing -------------------------------------------------------------------------------

    def _json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _apply_fault(self, target: str) -> bool:
        """Play a scripted fault if one is queued; True when the request was answered by it."""
        fault = self.server.take_fault(target)
        if fault is None:
            return False
        if fault.delay_seconds:
            time.sleep(fault.delay_seconds)
        if fault.drop_connection:
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        self._json(fault.status, {"error": fault.message or f"injected fault {fault.status}"}, headers)
        return True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- routes ---------------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        body = self._read_body()
        if path == "/_sandbox/faults":
            self._post_faults(body)
        elif (version := self._api_version(path)) is not None:
            self.server.request_log.append((path, 0))
            if not self._apply_fault("signed-urls"):
                self._signed_urls(body, version)
        else:
            self._json(404, {"error": "not found"})

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if url.path.startswith("/files/"):
            self.server.request_log.append((url.path, 0))
            fault = self.server.take_fault("download", withholding=True)
            if fault is not None or not self._apply_fault("download"):
                self._download(url.path[len("/files/"):], parse_qs(url.query), fault.withhold_records if fault else 0)
        elif url.path == "/_sandbox/faults":
            if not hmac.compare_digest(self.headers.get("authorization", ""), self.server.config.admin_token):
                self._json(401, {"error": "admin token required"})
                return
            with self.server.faults_lock:
                self._json(200, {"faults": [vars(f) for f in self.server.faults]})
        elif url.path == "/health":
            self._json(200, {"status": "ok"})
        else:
            self._json(404, {"error": "not found"})

    @staticmethod
    def _api_version(path: str) -> str | None:
        """The API version a signed-URL request's path asks for (at either base), else None."""
        path = path.removeprefix(ZENDESK_PREFIX)
        return next((version for version, endpoint in SIGNED_URLS_PATHS.items() if path == endpoint), None)

    def _post_faults(self, body: bytes) -> None:
        if not hmac.compare_digest(self.headers.get("authorization", ""), self.server.config.admin_token):
            self._json(401, {"error": "admin token required"})
            return
        spec = json.loads(body or b"{}")
        with self.server.faults_lock:
            if spec.get("clear"):
                self.server.faults.clear()
            for item in spec.get("faults", []):
                self.server.faults.append(Fault(**item))
        self._json(200, {"queued": len(self.server.faults)})

    def _signed_urls(self, body: bytes, version: str) -> None:
        cfg = self.server.config
        token = self.headers.get("authorization", "")
        token = token[7:] if token.lower().startswith("bearer ") else token
        if not token or not hmac.compare_digest(token, cfg.token):
            self._json(401, {"error": "Unauthorized: invalid API token"})
            return
        if self.headers.get("organizationid") != cfg.organization_id:
            self._json(403, {"error": "Forbidden: the token does not belong to this organization"})
            return
        bot_id = self.headers.get("botid", "")
        if not bot_id or not (cfg.export_root / bot_id).is_dir() or "/" in bot_id or bot_id.startswith("."):
            self._json(404, {"error": f"Bot not found: {bot_id!r}"})
            return
        try:
            payload = json.loads(body)
            day = dt.date.fromisoformat(payload["date"])
            ttl = int(payload.get("ttl", 60))
            if not 1 <= ttl <= 7 * 24 * 60:
                raise ValueError("ttl must be between 1 and 10080 minutes")
        except (ValueError, KeyError, TypeError) as exc:
            self._json(400, {"error": "Bad request: body must be "
                                      f"{{\"date\": \"YYYY-MM-DD\", \"ttl\": minutes}} ({exc})"})
            return
        today = cfg.today or dt.datetime.now(dt.timezone.utc).date()
        oldest = today - dt.timedelta(days=cfg.retention_days)
        if day < oldest:
            self._json(400, {"error": f"Date {day} is outside the data retention window: exports are kept "
                                      f"for {cfg.retention_days} days (oldest available: {oldest})"})
            return
        if day >= today:
            self._json(400, {"error": f"Date {day} is not complete yet: the latest export is for "
                                      f"{today - dt.timedelta(days=1)}"})
            return
        expires = int(time.time() + ttl * 60)
        urls = []
        for path in self.server.export_files(bot_id, day):
            rel = path.relative_to(cfg.export_root).as_posix()
            signature = self.server.sign(rel, expires)
            urls.append(f"{self.server.base_url}/files/{quote(rel)}?expires={expires}&signature={signature}")
        if version == "v2":
            self._json(200, {"date": day.isoformat(), "signedUrls": urls})
        elif urls:
            self._json(200, {"date": day.isoformat(), "urls": urls})
        else:
            self._json(404, {"error": f"No export found for bot {bot_id!r} on {day}"})

    def _download(self, rel: str, query: dict[str, list[str]], withhold: int = 0) -> None:
        rel = unquote(rel)
        try:
            expires = int(query["expires"][0])
            signature = query["signature"][0]
        except (KeyError, ValueError, IndexError):
            self._json(403, {"error": "AccessDenied: missing signature"})
            return
        if not hmac.compare_digest(signature, self.server.sign(rel, expires)):
            self._json(403, {"error": "AccessDenied: signature does not match"})
            return
        if time.time() > expires:
            self._json(403, {"error": "AccessDenied: Request has expired"})
            return
        path = (self.server.config.export_root / rel).resolve()
        if not path.is_file() or self.server.config.export_root.resolve() not in path.parents:
            self._json(404, {"error": "NoSuchKey"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip" if path.suffix == ".gz" else "application/json")
        if withhold:
            body = _without_last_records(path, withhold)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                self.wfile.write(chunk)


def _without_last_records(path: Path, count: int) -> bytes:
    """An export file as the vendor serves it before it has written its last ``count`` records."""
    import gzip

    raw = path.read_bytes()
    zipped = path.name.endswith(".gz")
    text = (gzip.decompress(raw) if zipped else raw).decode("utf-8")
    if text.lstrip().startswith("["):
        records = json.loads(text)
        body = json.dumps(records[:max(0, len(records) - count)], ensure_ascii=False)
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        body = "".join(f"{line}\n" for line in lines[:max(0, len(lines) - count)])
    return gzip.compress(body.encode()) if zipped else body.encode()


def main(argv: list[str] | None = None) -> None:
    """Serve exports standalone (docker-compose): token and organization from the environment."""
    import argparse
    import os

    p = argparse.ArgumentParser(description="Ultimate Data Export API stand-in")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--exports", type=Path, required=True, help="the dataset's ultimate/ folder")
    a = p.parse_args(argv)
    config = UltimateConfig(
        export_root=a.exports, token=os.environ["ULTIMATE_TOKEN"],
        organization_id=os.environ.get("ULTIMATE_ORGANIZATION_ID", "org-sandbox"),
        admin_token=os.environ.get("ULTIMATE_ADMIN_TOKEN") or secrets.token_urlsafe(16),
        public_url=os.environ.get("ULTIMATE_PUBLIC_URL"),
    )
    UltimateHTTPServer((a.host, a.port), config).serve_forever()


if __name__ == "__main__":
    main()
