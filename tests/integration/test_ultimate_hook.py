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


def test_a_day_of_exports_streams_record_by_record_as_each_records_own_text(sandbox):
    day = sandbox.days[1]
    urls = hook().get_signed_urls(day, "ult-bank", ttl_minutes=5)
    documents = [d for url in urls for d in hook().iter_documents(url)]
    expected = json.loads((sandbox.dataset / "ultimate" / "ult-bank" / f"{day}.json").read_text())
    assert all(isinstance(d, str) for d in documents)
    assert [json.loads(d) for d in documents] == expected and documents


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
        parts = {u.split("?")[0].rsplit("/", 1)[1]: list(hook().iter_documents(u)) for u in urls}
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
    assert [json.loads(d) for d in parts["part-1.json.gz"]] == good
    jsonl = parts["part-0.jsonl"]
    assert json.loads(jsonl[0]) == good[0] and json.loads(jsonl[2]) == good[2]
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


@pytest.mark.parametrize("status", [400, 401, 403])
def test_client_errors_are_never_retried(sandbox, faults, status):
    faults({"target": "signed-urls", "status": status, "times": 5})
    with pytest.raises(UltimateExportError, match=f"HTTP {status}"):
        hook().get_signed_urls(sandbox.days[1], "ult-bank")
    assert faults.remaining() == 4  # one request, no retry


def test_a_404_is_no_export_of_that_bot_and_day_not_an_error_and_is_not_retried(sandbox, faults, caplog, capfd):
    """The live v3 API answers 404 for a bot and day without an export (a quiet day, a day before the
    bot existed): no URLs, said in the log with the vendor's words."""
    faults({"target": "signed-urls", "status": 404, "times": 5, "message": "No export found"})
    caplog.set_level(logging.WARNING)
    assert hook().get_signed_urls(sandbox.days[1], "ult-bank") is None
    assert faults.remaining() == 4
    said = caplog.text + capfd.readouterr().out
    assert "no export of bot 'ult-bank'" in said and "No export found" in said


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
        list(hook().iter_documents(urls[0]))


def _serve(sandbox, bot: str, day: dt.date, body: bytes) -> list:
    """Serve ``body`` as ``bot``'s export of ``day`` and read it back through the hook."""
    path = sandbox.dataset / "ultimate" / bot / f"{day}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    try:
        return [d for url in hook().get_signed_urls(day, bot) for d in hook().iter_documents(url)]
    finally:
        path.unlink()
        path.parent.rmdir()


def test_array_records_jsonb_cannot_store_come_back_as_bad_lines_with_the_reason(sandbox):
    good = {"conversation_id": "ok", "labels": ["caf\u00e9"]}
    body = b"[\n  " + b",\n  ".join([
        json.dumps(good, indent=2).encode(),                 # pretty-printed: whitespace between tokens
        b'{"conversation_id": "nul", "language": "a\\u0000b"}',
        b'{"conversation_id": "nan", "score": NaN}',
        b'{"conversation_id": "surrogate", "language": "\\ud800"}',
        b'{"conversation_id": "latin1", "language": "espa\xf1ol"}',
        b'["not", "an", "object"]',
        b'{"conversation_id": "escaped", "note": "a literal \\\\u0000, not a NUL"}',
    ]) + b"\n]\n"
    documents = _serve(sandbox, "ult-edge", sandbox.days[1], body)
    assert [json.loads(d)["conversation_id"] for d in documents if isinstance(d, str)] == ["ok", "escaped"]
    assert json.loads(documents[0]) == good
    bad = {json.loads(d.raw)["conversation_id"] if d.raw.startswith("{") else d.raw[:5]: d.reason
           for d in documents if isinstance(d, BadLine)}
    assert bad["nul"].startswith("contains a NUL character")
    assert bad["nan"] == "not storable JSON: NaN is not a JSON number"
    assert "surrogate" in bad["surrogate"]
    assert bad["latin1"].startswith("not valid UTF-8: byte 0xf1")
    assert bad['["not'] == "a JSON list, not an object"


@pytest.mark.parametrize("body, says", [
    (b'[{"a": 1},, {"b": 2}]', "Expecting value at character 10"),
    (b'[{"a": 1} {"b": 2}]', "expected ',' or ']' after a record, found '{'"),
    (b'[{"a": 1}, {"b": ', "it ends inside a record"),
    (b'[{"a": 1}] trailing', "more data after the array"),
])
def test_a_broken_json_array_fails_the_file_saying_where(sandbox, body, says):
    with pytest.raises(UltimateExportError, match="JSON array is broken") as failure:
        _serve(sandbox, "ult-edge", sandbox.days[1], body)
    assert says in str(failure.value)


@pytest.mark.parametrize("layout", ["json lines", "json array"])
def test_a_record_nested_too_deep_to_parse_is_one_quarantined_record(sandbox, layout):
    """A record nested 20,000 deep (beyond any recursive parser) is quarantined with its reason and
    its own text; the records around it land (it used to raise RecursionError and fail the file)."""
    deep = '{"conversation_id": "deep", "note": "brackets ]} in a string", "x": ' + "[" * 20_000 + "]" * 20_000 + "}"
    records = ['{"conversation_id": "before"}', deep, '{"conversation_id": "after", "s": "\\"[{"}']
    body = ("\n".join(records) if layout == "json lines" else "[" + ",\n".join(records) + "]").encode()
    documents = _serve(sandbox, "ult-edge", sandbox.days[1], body)
    assert [json.loads(d)["conversation_id"] for d in documents if isinstance(d, str)] == ["before", "after"]
    [bad] = [d for d in documents if isinstance(d, BadLine)]
    assert bad.raw == deep and bad.reason == "not storable JSON: nested too deeply (depth limit exceeded)"
    assert isinstance(documents[1], BadLine)  # in its place: nothing after it was skipped
