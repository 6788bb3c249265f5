"""Unless landing against the moto S3 server and the real warehouse."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest

from chat_ingest.operators.unless import UnlessToStagingOperator
from chat_ingest.windows import day_window
from tests.support.sources import TODAY
from tests.support.sources import UNLESS_WEBSITE as WEBSITE
from tests.support.sources import load_unless as load
from tests.support.sources import unless_documents as documents
from tests.support.sources import unless_objects as objects

pytestmark = pytest.mark.integration


def fingerprint(conn) -> tuple:
    return tuple(conn.execute(
        f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM staging.unless_{table} t").fetchone()[0]
        for table in ("conversations", "logs"))


def test_first_run_loads_every_object_and_a_rerun_changes_nothing(clean_warehouse):
    sandbox = clean_warehouse
    docs = documents(sandbox)
    first = load(sandbox)
    assert first["conversations"]["rows_landed"] == len(docs) and first["conversations"]["rows_rejected"] == 0
    assert first["logs"]["rows_landed"] == sum(len(d["chatHistory"]) for d in docs.values())
    with sandbox.warehouse() as conn:
        before = fingerprint(conn)
        sample_key, sample = next(iter(docs.items()))
        row = conn.execute("SELECT session, metadata, created_at, log_items FROM staging.unless_conversations "
                           "WHERE object_key = %s", (sample_key,)).fetchone()
        watermark = conn.execute("SELECT watermark FROM audit.watermarks WHERE source = 'unless'").fetchone()[0]
    assert row[0] == sample["sessionId"] and row[1] == sample["metadata"]
    assert row[2] == (dt.datetime.fromtimestamp(sample["createdAt"] / 1000, dt.timezone.utc)
                      if "createdAt" in sample else None)
    assert row[3] == len(sample["chatHistory"])
    assert watermark.date() <= TODAY
    # Every day whose conversations started or logged anything is noted for the reporting layer.
    assert set(first["logs"]["changed_days"]) >= {d.isoformat() for d in sandbox.days}

    tomorrow = day_window(TODAY + dt.timedelta(days=1))
    refresh = UnlessToStagingOperator(
        task_id="load", tenant=WEBSITE, bucket=sandbox.env["SANDBOX_UNLESS_BUCKET"],
        account=sandbox.manifest["unless"]["account"],
        window={"start": tomorrow[0].isoformat(), "end": tomorrow[1].isoformat(), "full_refresh": True},
    ).execute({"run_id": "unless-refresh"})
    # a full refresh re-reads every object past the watermark; none is newer, so none is rewritten
    assert refresh["conversations"]["rows_extracted"] == len(docs) and refresh["conversations"]["rows_landed"] == 0

    again = load(sandbox)
    assert again["conversations"]["rows_landed"] == 0 and again["logs"]["rows_landed"] == 0
    assert again["logs"]["rows_deleted"] == 0 and not again["logs"]["changed_days"]
    with sandbox.warehouse() as conn:
        assert fingerprint(conn) == before


def test_a_rewritten_object_updates_that_conversation_and_its_logs_only(clean_warehouse):
    sandbox = clean_warehouse
    key, doc = sorted(documents(sandbox).items())[0]
    load(sandbox, run_id="unless-first")
    newer = dict(doc, chatHistory=[*doc["chatHistory"], {
        "type": "message", "sender": "user", "timestamp": doc["chatHistory"][-1]["timestamp"] + 5000,
        "uuid": str(uuid.uuid4()), "hidden": False, "content": "one more thing", "messageFormat": "md"}])
    with objects(sandbox, {key: json.dumps(newer).encode()}):
        summary = load(sandbox, run_id="unless-rewrite")
    assert summary["conversations"]["rows_landed"] == 1
    assert summary["logs"]["rows_deleted"] == len(doc["chatHistory"])
    assert summary["logs"]["rows_landed"] == len(doc["chatHistory"]) + 1
    with sandbox.warehouse() as conn:
        touched = conn.execute("SELECT DISTINCT object_key FROM staging.unless_conversations "
                               "WHERE _run_id = 'unless-rewrite'").fetchall()
        logs = conn.execute("SELECT count(*), max(content) FILTER (WHERE position = %s) FROM staging.unless_logs l "
                            "JOIN staging.unless_conversations c USING (website, session, conversation_id) "
                            "WHERE c.object_key = %s", (len(doc["chatHistory"]), key)).fetchone()
        others = conn.execute("SELECT count(*) FROM staging.unless_logs WHERE _run_id = 'unless-rewrite' "
                              "AND conversation_id <> %s", (key.rsplit("/", 1)[1].removesuffix(".json"),)).fetchone()
    assert touched == [(key,)]
    assert logs == (len(doc["chatHistory"]) + 1, "one more thing")
    assert others == (0,)


def test_bad_objects_are_quarantined_with_key_and_reason_and_the_rest_loads(clean_warehouse):
    sandbox = clean_warehouse
    prefix = f"{sandbox.manifest['unless']['account']}/conversations/{WEBSITE}"
    good = json.dumps(next(iter(documents(sandbox).values())))
    bad = {
        f"{prefix}/s-bad/truncated.json": good[: len(good) // 3].encode(),
        f"{prefix}/s-bad/empty.json": b"",
        f"{prefix}/s-bad/no-fields.json": b"{}",
        f"{prefix}/s-bad/no-history.json": json.dumps({"sessionId": "s-bad"}).encode(),
        f"{prefix}/s-bad/latin1.json": '{"sessionId": "s-bad", "chatHistory": [], "conversationName": "Müller"}'
        .encode("latin-1"),
        f"{prefix}/s-bad/notes.txt": b"not a conversation",
    }
    with objects(sandbox, bad):
        summary = load(sandbox, run_id="unless-bad")
    with sandbox.warehouse() as conn:
        reasons = dict(conn.execute("SELECT split_part(reason, ': ', 1), reason FROM audit.rejected_records "
                                    "WHERE run_id = 'unless-bad'").fetchall())
    assert set(reasons) == set(bad)
    assert "not valid JSON" in reasons[f"{prefix}/s-bad/truncated.json"]
    assert "empty object" in reasons[f"{prefix}/s-bad/empty.json"]
    assert "empty JSON object" in reasons[f"{prefix}/s-bad/no-fields.json"]
    assert "lacks required field(s): chatHistory or history" in reasons[f"{prefix}/s-bad/no-history.json"]
    assert "UTF-8" in reasons[f"{prefix}/s-bad/latin1.json"]
    assert "does not match" in reasons[f"{prefix}/s-bad/notes.txt"]
    assert summary["conversations"]["rows_rejected"] == len(bad)
    assert summary["conversations"]["rows_landed"] == len(documents(sandbox))


def test_an_object_written_while_the_run_lists_is_picked_up_by_the_next_run(clean_warehouse):
    """A key sorting before the listing's position is missed; the watermark overlap catches it next run."""
    sandbox = clean_warehouse
    prefix = f"{sandbox.manifest['unless']['account']}/conversations/{WEBSITE}"
    doc = next(iter(documents(sandbox).values()))
    early, late = f"{prefix}/--race/a.json", f"{prefix}/zz-race/b.json"
    client, bucket = sandbox.s3(), sandbox.env["SANDBOX_UNLESS_BUCKET"]

    class WrittenDuringListing(UnlessToStagingOperator):
        def selected(self, pages, lower, end):
            def racing():
                for number, page in enumerate(pages):
                    yield page
                    if number == 0:  # the listing is past the early key: write it, then a later one
                        client.put_object(Bucket=bucket, Key=early, Body=json.dumps(dict(doc, sessionId="--race")))
                        time.sleep(1.1)
                        client.put_object(Bucket=bucket, Key=late, Body=json.dumps(dict(doc, sessionId="zz-race")))
            return super().selected(racing(), lower, end)

    try:
        start, end = day_window(TODAY)
        first = WrittenDuringListing(task_id="load", tenant=WEBSITE, page_size=2,
                                     window={"start": start.isoformat(), "end": end.isoformat()},
                                     bucket=bucket, account=sandbox.manifest["unless"]["account"])
        first.execute({"run_id": "race-1"})
        # the next scheduled run covers tomorrow: only the watermark's overlap reaches back to the early key
        load(sandbox, TODAY + dt.timedelta(days=1), run_id="race-2")
        with sandbox.warehouse() as conn:
            runs = dict(conn.execute("SELECT object_key, _run_id FROM staging.unless_conversations "
                                     "WHERE object_key IN (%s, %s)", (early, late)).fetchall())
    finally:
        for key in (early, late):
            client.delete_object(Bucket=bucket, Key=key)
    assert runs == {late: "race-1", early: "race-2"}


def test_the_gate_refuses_an_unknown_sender(clean_warehouse):
    from chat_ingest.sources import unless
    from chat_ingest.validation import ValidationFailed, run_gate
    from chat_ingest.warehouse import connect

    sandbox = clean_warehouse
    key, doc = sorted(documents(sandbox).items())[1]
    odd = dict(doc, chatHistory=[dict(doc["chatHistory"][0], sender="robot")])
    with objects(sandbox, {key: json.dumps(odd).encode()}):
        load(sandbox, run_id="unless-gate")
    start, end = day_window(TODAY)
    with connect() as conn, pytest.raises(ValidationFailed, match="sender"):
        run_gate(conn, sandbox.warehouse_dsn.replace("postgresql://", "postgresql+psycopg2://"), unless.LOGS,
                 run_id="unless-gate", start=start, end=end, tenants=[WEBSITE])


def test_log_types_and_formats_the_seed_leaves_open_pass_the_gate_with_a_warning(clean_warehouse):
    """The seed gives a log's ``type`` by example ("e.g. 'message', 'error', 'input'") and its
    ``messageFormat`` as "'md' | 'html' | string": a value nobody listed lands and is a gate warning
    naming it and its count, not a failed gate (``sender``, a closed list, still fails: the test above)."""
    from chat_ingest.sources import unless
    from chat_ingest.validation import run_gate
    from chat_ingest.warehouse import connect

    sandbox = clean_warehouse
    key, doc = sorted(documents(sandbox).items())[1]
    first = doc["chatHistory"][0]
    odd = dict(doc, chatHistory=[dict(first, type="button", messageFormat="markdown"), *doc["chatHistory"][1:]])
    with objects(sandbox, {key: json.dumps(odd).encode()}):
        summary = load(sandbox, run_id="unless-open")
    assert summary["logs"]["rows_rejected"] == 0
    with sandbox.warehouse() as conn:
        assert conn.execute("SELECT count(*) FROM staging.unless_logs WHERE type = 'button' "
                            "AND message_format = 'markdown'").fetchone() == (1,)
    start, end = day_window(TODAY)
    with connect() as conn:
        result = run_gate(conn, sandbox.warehouse_dsn.replace("postgresql://", "postgresql+psycopg2://"), unless.LOGS,
                          run_id="unless-open", start=start, end=end, tenants=[WEBSITE])
    warned = sorted((o.column, o.severity, o.unexpected_values) for o in result.outcomes if not o.success)
    assert warned == [("message_format", "warning", [{"value": "markdown", "count": 1}]),
                      ("type", "warning", [{"value": "button", "count": 1}])]


def test_timestamps_in_seconds_as_numeric_strings_or_iso_land_at_their_time_and_a_bad_one_alone_is_quarantined(
        clean_warehouse):
    """The seed types ``timestamp`` and ``createdAt`` "number" and names no unit: seconds land as
    seconds (as milliseconds they would be 1970), a number sent as a string and an ISO 8601 string
    land as the time they say.  A log item whose timestamp is no time (``now``, which PostgreSQL
    would read as the load time, or ``12 o'clock``) is quarantined alone with its reason; before, a
    numeric string became the conversation's start and quarantined the whole conversation."""
    sandbox = clean_warehouse
    key, doc = sorted(documents(sandbox).items())[2]
    start = dt.datetime.fromtimestamp(doc["chatHistory"][0]["timestamp"] // 1000, dt.timezone.utc)
    at = [start + dt.timedelta(seconds=n) for n in (0, 7, 15)]
    sent = [int(at[0].timestamp()), str(int(at[1].timestamp() * 1000)),
            at[2].strftime("%Y-%m-%dT%H:%M:%SZ"), "now", "12 o'clock"]
    items = [{"type": "message", "sender": "user", "uuid": str(uuid.uuid4()), "hidden": False,
              "content": f"item {n}", "timestamp": stamp} for n, stamp in enumerate(sent)]
    odd = {k: v for k, v in doc.items() if k != "createdAt"} | {"chatHistory": items}
    with objects(sandbox, {key: json.dumps(odd).encode()}):
        summary = load(sandbox, run_id="unless-times")
    assert summary["conversations"]["rows_rejected"] == 0 and summary["logs"]["rows_rejected"] == 2
    with sandbox.warehouse() as conn:
        started = conn.execute("SELECT started_at, created_at FROM staging.unless_conversations "
                               "WHERE object_key = %s", (key,)).fetchone()
        logged = conn.execute("SELECT l.position, l.logged_at FROM staging.unless_logs l "
                              "JOIN staging.unless_conversations c USING (website, session, conversation_id) "
                              "WHERE c.object_key = %s ORDER BY l.position", (key,)).fetchall()
        reasons = sorted(r for (r,) in conn.execute(
            "SELECT reason FROM audit.rejected_records WHERE run_id = 'unless-times'"))
    assert started == (at[0], None)
    assert logged == list(enumerate(at))
    assert reasons == ["logged_at: '12 o''clock' is not a valid timestamptz",
                       "logged_at: 'now (no date in it)' is not a valid timestamptz"]


def test_dag_run_lands_every_website_and_passes_the_gate(clean_warehouse, airflow, tmp_path):
    import psycopg

    sandbox = clean_warehouse
    run_id = airflow.trigger_day("unless_ingest", sandbox.days[-1], tmp_path / "airflow.log")
    with psycopg.connect(airflow.metadata_dsn) as conn:
        states = dict(conn.execute("SELECT task_id || coalesce('[' || nullif(map_index, -1) || ']', ''), state "
                                   "FROM task_instance WHERE run_id = %s", (run_id,)).fetchall())
    assert set(states.values()) == {"success"} and {"load[0]", "load[1]", "validate_logs"} <= set(states)
    with sandbox.warehouse() as conn:
        websites = {w for (w,) in conn.execute("SELECT DISTINCT website FROM staging.unless_conversations")}
        checks = conn.execute("SELECT count(*), bool_and(success) FROM audit.validation_results "
                              "WHERE source = 'unless' AND run_id = %s", (run_id,)).fetchone()
    assert websites == set(sandbox.manifest["unless"]["websites"])
    assert checks[0] > 0 and checks[1]


def test_a_field_the_seed_does_not_name_lands_with_its_row_and_is_reported_as_drift(clean_warehouse):
    """An object is rewritten in place: a document field, or a log item field, the seed does not name
    would be lost for good if it were not landed.  It lands in its row's ``extra``, and the load's
    summary and the gate name it with the rows holding it."""
    from chat_ingest.sources import unless
    from chat_ingest.validation import run_gate
    from chat_ingest.warehouse import connect

    sandbox = clean_warehouse
    key, doc = sorted(documents(sandbox).items())[1]
    items = [dict(doc["chatHistory"][0], reaction={"emoji": "thumbs_up"}), *doc["chatHistory"][1:]]
    newer = dict(doc, chatHistory=items, customerTier="gold")
    with objects(sandbox, {key: json.dumps(newer).encode()}):
        summary = load(sandbox, run_id="unless-drift")
    assert summary["conversations"]["drift"] == {"customerTier": 1}
    assert summary["logs"]["drift"] == {"reaction": 1}
    with sandbox.warehouse() as conn:
        landed = conn.execute("SELECT c.extra, l.extra FROM staging.unless_conversations c JOIN staging.unless_logs l "
                              "USING (website, session, conversation_id) WHERE c.object_key = %s AND l.position = 0",
                              (key,)).fetchone()
        others = conn.execute("SELECT count(extra) FROM staging.unless_conversations WHERE object_key <> %s",
                              (key,)).fetchone()[0]
    assert landed == ({"customerTier": "gold"}, {"reaction": {"emoji": "thumbs_up"}}) and others == 0
    start, end = day_window(TODAY)
    with connect() as conn:
        outcomes = run_gate(conn, sandbox.warehouse_dsn.replace("postgresql://", "postgresql+psycopg2://"),
                            unless.CONVERSATIONS, run_id="unless-drift", start=start, end=end,
                            tenants=[WEBSITE]).outcomes
    [drift] = [o for o in outcomes if o.expectation == "undeclared_fields"]
    assert drift.unexpected_values == [{"value": "customerTier", "count": 1}] and drift.severity == "warning"


def test_a_batch_advances_each_websites_watermark_by_its_own_objects_only(clean_warehouse):
    """A task landing a batch of websites in turn: a website with no object must not inherit the
    watermark of the one landed before it (which would skip its objects older than that for good)."""
    sandbox = clean_warehouse
    start, end = day_window(TODAY)
    op = UnlessToStagingOperator(task_id="load", tenants=[WEBSITE, "web-quiet"],
                                 window={"start": start.isoformat(), "end": end.isoformat()},
                                 bucket=sandbox.env["SANDBOX_UNLESS_BUCKET"],
                                 account=sandbox.manifest["unless"]["account"])
    summaries = op.execute({"run_id": "unless-batch"})
    assert summaries["web-quiet"]["conversations"]["rows_extracted"] == 0
    with sandbox.warehouse() as conn:
        scopes = [s for (s,) in conn.execute("SELECT scope FROM audit.watermarks WHERE source = 'unless'")]
    assert scopes == [f"{sandbox.manifest['unless']['account']}/conversations/{WEBSITE}/"]
