"""Ultimate landing against the stand-in over real HTTP and the real warehouse."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from chat_ingest.operators.ultimate import UltimateToStagingOperator
from chat_ingest.windows import day_window

pytestmark = pytest.mark.integration


def load(day: dt.date, bot: str = "ult-bank", run_id: str | None = None) -> dict:
    """Land one bot's day; the summary of both tables, by table name."""
    start, end = day_window(day)
    op = UltimateToStagingOperator(task_id="load", tenant=bot, window={"start": start.isoformat(),
                                                                       "end": end.isoformat()})
    return op.execute({"run_id": run_id or f"test-{uuid.uuid4().hex[:8]}"})


def test_a_day_lands_one_row_per_conversation_and_per_intent_and_reruns_change_nothing(clean_warehouse):
    sandbox = clean_warehouse
    day = sandbox.days[1]
    records = json.loads((sandbox.dataset / "ultimate" / "ult-bank" / f"{day}.json").read_text())
    summary = load(day)
    # a new day of good records: projected from the copied documents straight into staging
    assert summary["conversations"]["road"] == summary["intents"]["road"] == "straight"
    # what the reporting layer rebuilds: the days the conversations *started* (file X may hold day X-1's)
    started = {dt.datetime.fromisoformat(r["conversation_start_time"].replace("Z", "+00:00"))
               .astimezone(dt.timezone.utc).date().isoformat() for r in records}
    assert list(summary["conversations"]["changed_days"]) == sorted(started)
    with sandbox.warehouse() as conn:
        noted = {d.isoformat() for (d,) in conn.execute(
            "SELECT DISTINCT day FROM audit.changed_days WHERE source = 'ultimate' AND table_name = 'conversations' "
            "AND tenant = 'ult-bank'")}
        assert noted == started
        convs = conn.execute("SELECT count(*), count(DISTINCT conversation_id) FROM staging.ultimate_conversations"
                             ).fetchone()
        intents = conn.execute("SELECT count(*) FROM staging.ultimate_intents").fetchone()[0]
        sample = conn.execute("SELECT conversations_data, visitor_messages_count, labels FROM "
                              "staging.ultimate_conversations WHERE conversation_id = %s",
                              (records[0]["conversation_id"],)).fetchone()
        before = conn.execute("SELECT md5(string_agg(c::text, '|' ORDER BY c::text)) FROM "
                              "(SELECT conversation_id, conversation_status, visitor_messages_count "
                              "FROM staging.ultimate_conversations) c").fetchone()
    assert convs == (len(records), len(records))
    assert intents == sum(len(r["triggered_intent_replies"]) for r in records)
    assert sample == (json.loads(records[0]["conversations_data"]), int(records[0]["visitor_messages_count"]),
                      records[0]["labels"])
    rerun = load(day)
    # an unchanged file: its rows' digest equals staging's, so nothing is rewritten
    for table in ("conversations", "intents"):
        assert rerun[table]["road"] == "identical" and rerun[table]["rows_landed"] == 0
    assert rerun["conversations"]["rows_unchanged"] == len(records)
    with sandbox.warehouse() as conn:
        assert conn.execute("SELECT count(*) FROM staging.ultimate_conversations").fetchone()[0] == len(records)
        assert conn.execute("SELECT md5(string_agg(c::text, '|' ORDER BY c::text)) FROM "
                            "(SELECT conversation_id, conversation_status, visitor_messages_count "
                            "FROM staging.ultimate_conversations) c").fetchone() == before


def test_truncated_record_and_bad_count_are_quarantined_the_rest_lands(clean_warehouse):
    sandbox = clean_warehouse
    day = sandbox.days[0]
    good = json.loads((sandbox.dataset / "ultimate" / "ult-telco" / f"{day}.json").read_text())[:3]
    bad_count = dict(good[2], conversation_id="bad-count", visitor_messages_count="many")
    lines = [json.dumps(good[0]), json.dumps(good[1])[:40], json.dumps(bad_count)]
    path = sandbox.dataset / "ultimate" / "ult-telco" / f"{day}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    try:
        summary = load(day, bot="ult-telco", run_id="ult-bad")["conversations"]
    finally:
        path.unlink()
    with sandbox.warehouse() as conn:
        reasons = dict(conn.execute("SELECT coalesce(payload->>'conversation_id', payload->>'raw'), reason "
                                    "FROM audit.rejected_records WHERE run_id = 'ult-bad'").fetchall())
    assert summary["rows_rejected"] == 2
    assert reasons["bad-count"] == "visitor_messages_count: 'many' is not a valid integer"
    assert reasons[json.dumps(good[1])[:40]].startswith("not valid JSON")


def test_records_jsonb_cannot_store_and_intents_that_are_not_objects_are_quarantined(clean_warehouse):
    """The seed types ``triggered_intent_replies`` as ``string[]`` and reads ``intent_name`` from its items:
    an item that is an object lands, and so does one that is a string holding an object (the way
    ``conversations_data`` comes); a name alone or a number is quarantined with its text."""
    sandbox = clean_warehouse
    day = sandbox.days[0]
    good = json.loads((sandbox.dataset / "ultimate" / "ult-telco" / f"{day}.json").read_text())[0]
    as_string = {"intent_name": "Order status", "intent_timestamp": good["conversation_start_time"],
                 "not_meaningful": False}
    odd_intents = dict(good, conversation_id="odd-intents",
                       triggered_intent_replies=[good["triggered_intent_replies"][0], json.dumps(as_string),
                                                 "Greeting", 7])
    path = sandbox.dataset / "ultimate" / "ult-telco" / f"{day}.json"
    original = path.read_bytes()
    path.write_text("[" + ", ".join([json.dumps(good), json.dumps(odd_intents),
                                     json.dumps(dict(good, conversation_id="nul", language="a\u0000b"))]) + "]")
    try:
        summary = load(day, bot="ult-telco", run_id="ult-odd")
    finally:
        path.write_bytes(original)
    conversations, intents = summary["conversations"], summary["intents"]
    # rows the source marked bad cannot be kept by a straight landing: both tables went the checked way
    assert conversations["road"] == intents["road"] == "checked"
    assert (conversations["rows_landed"], conversations["rows_rejected"]) == (2, 1)
    assert (intents["rows_landed"], intents["rows_rejected"]) == (len(good["triggered_intent_replies"]) + 2, 2)
    with sandbox.warehouse() as conn:
        rejected = conn.execute("SELECT table_name, reason, payload->>'raw' FROM audit.rejected_records "
                                "WHERE run_id = 'ult-odd' ORDER BY table_name, payload->>'raw'").fetchall()
        positions = conn.execute("SELECT position, intent_name, intent_timestamp IS NOT NULL, not_meaningful "
                                 "FROM staging.ultimate_intents WHERE conversation_id = 'odd-intents' "
                                 "ORDER BY position").fetchall()
    first = good["triggered_intent_replies"][0]
    assert positions == [(0, first["intent_name"], first.get("intent_timestamp") is not None,
                          first.get("not_meaningful")),
                         (1, "Order status", True, False)]
    assert rejected[0][0] == "conversations" and rejected[0][1].startswith("contains a NUL character")
    assert [(t, r.split(";")[0], raw) for t, r, raw in rejected[1:]] == [
        ("intents", "triggered_intent_replies: an item is not an object", "7"),
        ("intents", "triggered_intent_replies: an item is not an object", "Greeting")]


def test_a_time_with_no_date_in_it_is_quarantined_not_read_as_the_load_time(clean_warehouse):
    """PostgreSQL reads ``now``, ``today`` or ``yesterday`` as a time of the load: an export string
    like that would have landed as if the vendor had said it (it passes every range check).  Such a
    conversation, or intent, is quarantined with its reason; the rest of the file lands."""
    sandbox = clean_warehouse
    day = sandbox.days[0]
    path = sandbox.dataset / "ultimate" / "ult-telco" / f"{day}.json"
    original = path.read_bytes()
    good = json.loads(original)[:2]
    intents = [{"intent_name": "Order status", "intent_timestamp": "today", "not_meaningful": False}]
    records = [good[0], dict(good[1], conversation_id="said-now", conversation_start_time="now"),
               dict(good[1], conversation_id="intent-today", triggered_intent_replies=intents)]
    path.write_text(json.dumps(records))
    try:
        summary = load(day, bot="ult-telco", run_id="ult-now")
    finally:
        path.write_bytes(original)
    assert (summary["conversations"]["rows_landed"], summary["conversations"]["rows_rejected"]) == (2, 1)
    assert summary["intents"]["rows_rejected"] == 1
    with sandbox.warehouse() as conn:
        rejected = conn.execute("SELECT table_name, payload->>'conversation_id', reason FROM audit.rejected_records "
                                "WHERE run_id = 'ult-now' ORDER BY table_name").fetchall()
        landed = conn.execute("SELECT count(*) FROM staging.ultimate_intents WHERE conversation_id = "
                              "'intent-today'").fetchone()
    assert rejected == [
        ("conversations", "said-now", "conversation_start_time: 'now (no date in it)' is not a valid timestamptz"),
        ("intents", "intent-today", "intent_timestamp: 'today (no date in it)' is not a valid timestamptz")]
    assert landed == (0,)


def test_a_date_outside_the_vendors_window_fails_before_any_work(clean_warehouse):
    old = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=40)
    with pytest.raises(Exception, match="keeps exports for 30 days"):
        load(old)
    with clean_warehouse.warehouse() as conn:
        assert conn.execute("SELECT to_regclass('audit.load_log')").fetchone()[0] is None


def test_dag_run_lands_both_tables_and_keeps_the_token_out_of_task_logs(clean_warehouse, airflow, tmp_path):
    import psycopg

    sandbox = clean_warehouse
    run_id = airflow.trigger_day("ultimate_ingest", sandbox.days[1], tmp_path / "airflow.log")
    with psycopg.connect(airflow.metadata_dsn) as conn:
        states = {s for (s,) in conn.execute("SELECT state FROM task_instance WHERE run_id = %s", (run_id,))}
    assert states == {"success"}
    with sandbox.warehouse() as conn:
        bots = {r[0] for r in conn.execute("SELECT DISTINCT bot_id FROM staging.ultimate_conversations")}
        assert conn.execute("SELECT count(*) FROM staging.ultimate_intents").fetchone()[0] > 0
    assert bots == set(sandbox.manifest["ultimate"]["bots"])
    token = json.loads(sandbox.env["AIRFLOW_CONN_ULTIMATE_EXPORT"])["password"]
    logs = (tmp_path / "airflow.log").read_text(errors="replace")
    task_logs = "".join(p.read_text(errors="replace") for p in
                        (sandbox.root / "airflow" / "logs").rglob("*.log") if "ultimate_ingest" in str(p))
    assert "staging.ultimate_conversations" in logs + task_logs
    assert token not in logs and token not in task_logs


def test_a_429_and_an_expired_url_on_the_way_still_load_the_day(clean_warehouse, faults):
    sandbox = clean_warehouse
    day = sandbox.days[1]
    expected = len(json.loads((sandbox.dataset / "ultimate" / "ult-bank" / f"{day}.json").read_text()))
    faults({"target": "signed-urls", "status": 429, "retry_after": 1, "times": 1},
           {"target": "download", "status": 403, "times": 1, "message": "AccessDenied: Request has expired"})
    summary = load(day)["conversations"]
    assert summary["rows_landed"] == expected and summary["rows_rejected"] == 0


def test_the_gate_checks_that_conversations_end_after_they_start(clean_warehouse):
    from chat_ingest.sources import ultimate
    from chat_ingest.validation import ValidationFailed, run_gate
    from chat_ingest.warehouse import connect

    sandbox = clean_warehouse
    day = sandbox.days[1]
    load(day, run_id="ult-order")
    with sandbox.warehouse() as conn:
        conn.execute("UPDATE staging.ultimate_conversations SET conversation_end_time = "
                     "conversation_start_time - interval '1 minute' WHERE conversation_id = "
                     "(SELECT min(conversation_id) FROM staging.ultimate_conversations)")
    start, end = day_window(day)
    with connect() as conn, pytest.raises(ValidationFailed, match="conversation_end_time >= conversation_start_time"):
        run_gate(conn, sandbox.warehouse_dsn.replace("postgresql://", "postgresql+psycopg2://"),
                 ultimate.CONVERSATIONS, run_id="ult-order", start=start, end=end, tenants=["ult-bank"])


def test_a_time_an_hour_ahead_lands_and_passes_the_gate_and_one_days_past_tomorrow_is_refused_by_both(
        clean_warehouse):
    """One rule for the loader and the gate (``rules.FUTURE_TOLERANCE``): a vendor clock an hour
    ahead lands and passes; beyond the tolerance, the loader quarantines it, and the gate, reading a row
    staging holds from before, fails it too.  (The gate allowed only ten minutes, so a row the loader
    had landed blocked the table's Asset.)"""
    from chat_ingest.sources import ultimate
    from chat_ingest.validation import ValidationFailed, run_gate
    from chat_ingest.warehouse import connect

    sandbox = clean_warehouse
    day = sandbox.days[0]
    path = sandbox.dataset / "ultimate" / "ult-telco" / f"{day}.json"
    original = path.read_bytes()
    good = json.loads(original)[:2]
    now = dt.datetime.now(dt.timezone.utc)
    ahead = (now + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    beyond = (now + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(json.dumps([dict(good[0], conversation_end_time=ahead),
                                dict(good[1], conversation_end_time=beyond)]))
    try:
        summary = load(day, bot="ult-telco", run_id="ult-ahead")["conversations"]
    finally:
        path.write_bytes(original)
    assert (summary["rows_landed"], summary["rows_rejected"]) == (1, 1)
    with sandbox.warehouse() as conn:
        reason = conn.execute("SELECT reason FROM audit.rejected_records WHERE run_id = 'ult-ahead' AND "
                              "table_name = 'conversations'").fetchone()[0]
    assert reason.endswith("is after the load time plus 1 day")
    start, end = day_window(day)
    dsn = sandbox.warehouse_dsn.replace("postgresql://", "postgresql+psycopg2://")
    with connect() as conn, pytest.raises(ValidationFailed) as failure:  # one of two quarantined: over 5 %
        run_gate(conn, dsn, ultimate.CONVERSATIONS, run_id="ult-ahead", start=start, end=end, tenants=["ult-telco"])
    [between] = [o for o in failure.value.outcomes if o.column == "conversation_end_time"
                 and o.expectation == "expect_column_values_to_be_between"]
    assert between.success  # the hour-ahead row staging holds passes the gate's bound too
    with sandbox.warehouse() as conn:  # a row staging holds from before that is beyond the bound fails it
        conn.execute("UPDATE staging.ultimate_conversations SET conversation_end_time = %s", (beyond,))
    with connect() as conn, pytest.raises(ValidationFailed, match="conversation_end_time"):
        run_gate(conn, dsn, ultimate.CONVERSATIONS, run_id="ult-ahead", start=start, end=end, tenants=["ult-telco"])


def test_an_export_that_vanishes_while_its_urls_are_refreshed_fails_the_day_saying_so(clean_warehouse, faults):
    """A URL expires mid-run and the fresh answer has no export any more (404): the day fails with that
    reason and lands nothing, instead of an IndexError on the file list."""
    from chat_ingest.hooks.ultimate import UltimateExportError

    faults({"target": "download", "status": 403, "times": 1, "message": "AccessDenied: Request has expired"},
           {"target": "signed-urls", "status": 404, "times": 1, "skip": 1, "message": "No export found"})
    with pytest.raises(UltimateExportError, match="changed while it was read .1 file.s., now none"):
        load(clean_warehouse.days[1], run_id="ult-vanished")
    with clean_warehouse.warehouse() as conn:
        assert conn.execute("SELECT count(*) FROM staging.ultimate_conversations").fetchone() == (0,)
