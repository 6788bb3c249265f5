"""UltimateExportHook against the Ultimate stand-in over real HTTP, faults injected by the stand-in."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import time

import pytest

from chat_ingest.hooks.ultimate import BadLine, SignedUrlExpired, UltimateExportError, UltimateExportHook

pytestmark = pytest.mark.integration


def hook(**kw) -> UltimateExportHook:
    return UltimateExportHook(backoff_seconds=0.05, **kw)


def test_a_day_of_exports_streams_record_by_record(sandbox):
    day = sandbox.days[1]
    urls = hook().get_signed_urls(day, "ult-bank", ttl_minutes=5)
    records = [r for url in urls for r in hook().iter_records(url)]
    expected = json.loads((sandbox.dataset / "ultimate" / "ult-bank" / f"{day}.json").read_text())
    assert records == expected and records


def test_json_lines_and_gzip_parts_with_a_truncated_record(sandbox):
    day = sandbox.days[2]
    folder = sandbox.dataset / "ultimate" / "ult-telco" / day.isoformat()
    folder.mkdir()
    good = [{"conversation_id": f"c{i}", "n": i} for i in range(3)]
    lines = [json.dumps(r) for r in good]
    (folder / "part-0.jsonl").write_text("\n".join([lines[0], lines[1][:9], lines[2]]) + "\n")
    (folder / "part-1.json.gz").write_bytes(gzip.compress(json.dumps(good).encode()))
    try:
        urls = [u for u in hook().get_signed_urls(day, "ult-telco") if f"/{day}/" in u]
        parts = {u.split("?")[0].rsplit("/", 1)[1]: list(hook().iter_records(u)) for u in urls}
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
    assert parts["part-1.json.gz"] == good
    jsonl = parts["part-0.jsonl"]
    assert jsonl[0] == good[0] and jsonl[2] == good[2]
    assert isinstance(jsonl[1], BadLine) and jsonl[1].raw == lines[1][:9] and "not valid JSON" in jsonl[1].reason


def test_429_with_retry_after_then_success(sandbox, faults):
    faults({"target": "signed-urls", "status": 429, "retry_after": 1, "times": 1})
    started = time.monotonic()
    assert hook().get_signed_urls(sandbox.days[1], "ult-bank")
    assert faults.remaining() == 0
    assert time.monotonic() - started >= 1.0  # waited as told, not the 0.05 s backoff


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 502}, {"status": 503}, {"drop_connection": True}])
def test_transient_faults_are_retried(sandbox, faults, fault):
    faults({"target": "signed-urls", "times": 2, **fault})
    assert hook().get_signed_urls(sandbox.days[1], "ult-bank")
    assert faults.remaining() == 0


def test_bounded_retries_then_a_clear_failure(sandbox, faults):
    faults({"target": "signed-urls", "status": 503, "times": 10})
    with pytest.raises(RuntimeError, match="HTTP 503 .* gave up after 3 attempts"):
        hook(max_attempts=3).get_signed_urls(sandbox.days[1], "ult-bank")
    assert faults.remaining() == 7


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_never_retried(sandbox, faults, status):
    faults({"target": "signed-urls", "status": status, "times": 5})
    with pytest.raises(UltimateExportError, match=f"HTTP {status}"):
        hook().get_signed_urls(sandbox.days[1], "ult-bank")
    assert faults.remaining() == 4  # one request, no retry


def test_a_wrong_token_fails_at_once_without_showing_it(sandbox, monkeypatch, caplog, capfd):
    conn = json.loads(sandbox.env["AIRFLOW_CONN_ULTIMATE_EXPORT"])
    monkeypatch.setenv("AIRFLOW_CONN_ULTIMATE_EXPORT", json.dumps({**conn, "password": "tok-Wr0ng-123"}))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UltimateExportError, match="HTTP 401.*token was refused") as failure:
        hook().get_signed_urls(sandbox.days[1], "ult-bank")
    ok, message = hook().test_connection()
    assert not ok and "401" in message
    printed = capfd.readouterr()
    for text in (str(failure.value), message, caplog.text, printed.out, printed.err):
        assert "tok-Wr0ng-123" not in text


def test_test_connection_accepts_the_right_token(sandbox):
    assert hook().test_connection()[0]


def test_dates_outside_the_vendor_window_fail_before_any_request(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_ULTIMATE_EXPORT", "http://:tok@127.0.0.1:9/http")  # nothing listens there
    today = dt.date(2026, 11, 20)
    with pytest.raises(UltimateExportError, match="keeps exports for 30 days: 2026-10-20 is older"):
        hook(today=today).get_signed_urls(dt.date(2026, 10, 20), "ult-bank")
    with pytest.raises(UltimateExportError, match="not complete yet"):
        hook(today=today).get_signed_urls(today, "ult-bank")


def test_an_expired_url_says_so(sandbox, faults):
    urls = hook().get_signed_urls(sandbox.days[1], "ult-bank")
    faults({"target": "download", "status": 403, "times": 1, "message": "AccessDenied: Request has expired"})
    with pytest.raises(SignedUrlExpired):
        list(hook().iter_records(urls[0]))
