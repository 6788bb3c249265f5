"""Table specs, windows, identifiers and the generated GX suites."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from chat_ingest.hooks.clickhouse import UnsafeIdentifierError, check_identifier
from chat_ingest.rules import EARLIEST_TIMESTAMP, FUTURE_TOLERANCE
from chat_ingest.sources import a8, botslovers
from chat_ingest.tablespec import Column, MergeRule, TableSpec
from chat_ingest.validation import build_expectations
from chat_ingest.windows import resolve_window

UTC = dt.timezone.utc


def test_botslovers_specs_follow_the_seed():
    assert botslovers.MESSAGES.column_names == (
        "sender_id", "sender_type", "id", "created_at", "channel", "session", "direction", "type", "text", "language")
    assert botslovers.MESSAGES.column("sender_type").allowed == ("user", "bot", "system", "human")
    assert set(botslovers.CHAT_AGENT_LOG.column("event").allowed) == {
        "bot_assigned", "agent_timeout", "user_timeout", "agent_joined", "chat_escalated", "manual_close",
        "resolved", "assigned_to_human", "transferred"}
    assert botslovers.CHAT_AGENT_LOG.column("left_at").source_type == "Nullable(DateTime)"
    assert botslovers.CHAT_AGENT_LOG.merge_rule is MergeRule.UPSERT_NEWEST
    assert botslovers.AGENT_STATUS_LOGS.column("new_status").allowed == (
        "training", "offline", "break", "ending_shift", "inactive", "online")
    assert {s.staging_table for s in botslovers.TABLES.values()} == {
        "botslovers_messages", "botslovers_chat_agent_log", "botslovers_agent_status_logs"}
    assert botslovers.MESSAGES.staging_columns[0] == "company"
    assert botslovers.MESSAGES.staging_key == ("id", "company")


def test_every_staging_key_leads_with_the_source_key_not_the_tenant():
    """A load's rows all share one tenant: a key that led with it made every comparison of the key's
    index maintenance compare two columns (3M rows in random key order landed a fifth slower)."""
    from chat_ingest.sources import TABLES_BY_SOURCE

    keyed = [spec for tables in TABLES_BY_SOURCE.values() for spec in tables.values() if spec.key]
    assert keyed
    for spec in keyed:
        assert spec.staging_key[:len(spec.key)] == spec.key, spec.qualified_name
        if spec.tenant_column and spec.tenant_column not in spec.key:
            assert spec.staging_key[-1] == spec.tenant_column, spec.qualified_name


def test_every_b_tree_key_a_row_fills_fits_one_index_entry_by_the_limits_of_its_values():
    """The staging key and the days table's key fit one index entry by the limits of their values alone
    (a keyed value, a tenant), so no row needs a check of its key's size; a spec whose key could hold
    more, or whose tenant could be larger than a configured one, is refused where it is declared."""
    from chat_ingest.landing.checks import value_checks
    from chat_ingest.rules import INDEX_ENTRY_MAX_BYTES, KEY_VALUE_MAX_BYTES, TENANT_MAX_BYTES
    from chat_ingest.sources import TABLES_BY_SOURCE, unless

    assert botslovers.MESSAGES.indexed_keys == (("id", "company"), ("session", "company"))
    assert a8.TABLES["messages"].indexed_keys == (("chat_id", "bot_handle"),)
    assert unless.LOGS.index_entry_bytes(unless.LOGS.indexed_keys[0]) == TENANT_MAX_BYTES + 2 * KEY_VALUE_MAX_BYTES
    for spec in (spec for tables in TABLES_BY_SOURCE.values() for spec in tables.values()):
        assert all(spec.index_entry_bytes(key) <= INDEX_ENTRY_MAX_BYTES for key in spec.indexed_keys), spec.name
    _, message = value_checks(botslovers.MESSAGES, botslovers.MESSAGES.column("session"), typed=False)[-1]
    assert f"over the limit of {KEY_VALUE_MAX_BYTES}" in message.as_string(None)

    def spec(*columns: Column, **kw) -> TableSpec:
        return TableSpec(source="x", name="t", merge_rule=MergeRule.UPSERT_BY_KEY, cursor="at",
                         columns=(*columns, Column("at", "timestamptz")), **kw)

    assert spec(Column("id", "text", keyed=True), key=("id",), tenant_column=None)
    with pytest.raises(ValueError, match=r"\(id\) may hold more than one index entry does"):
        spec(Column("id", "text"), key=("id",), tenant_column=None)
    with pytest.raises(ValueError, match="the tenant holds at most 128 bytes"):
        spec(Column("id", "text", keyed=True), Column("bot", "text", keyed=True), key=("id",), tenant_column="bot",
             tenant_in_source=True)


def test_a8_has_the_seeds_eleven_tables():
    assert len(a8.TABLES) == 11
    assert {"time", "chat_id", "mid", "msg_type", "reply_to_id", "bot_handle", "msg_from", "resp_time", "msg"} == set(
        a8.MESSAGES.column_names)
    assert a8.USER.column("custom_fields").pg_type == "jsonb"
    assert a8.USER.column("latitude").value_range == (-90, 90)
    assert all(spec.cursor == "time" and spec.merge_rule is MergeRule.REPLACE_WINDOW for spec in a8.TABLES.values())
    assert a8.USER_MESSAGE_DETAILS.tenant_column is None and a8.MESSAGES.tenant_column == "bot_handle"


def test_a_spec_refuses_inconsistent_definitions():
    cols = (Column("id", "text"), Column("at", "timestamptz"))
    with pytest.raises(ValueError, match="'nope' is not a column"):
        TableSpec(source="s", name="t", columns=cols, tenant_column="x", merge_rule=MergeRule.UPSERT_BY_KEY,
                  cursor="nope", key=("id",))
    with pytest.raises(ValueError, match="needs a version_column"):
        TableSpec(source="s", name="t", columns=cols, tenant_column="x", merge_rule=MergeRule.UPSERT_NEWEST,
                  cursor="at", key=("id",))
    with pytest.raises(ValueError, match="duplicate"):
        TableSpec(source="s", name="t", columns=cols + cols[:1], tenant_column="x",
                  merge_rule=MergeRule.REPLACE_WINDOW, cursor="at")
    with pytest.raises(ValueError, match="'chat' is not a column"):
        TableSpec(source="s", name="t", columns=cols, tenant_column="x", merge_rule=MergeRule.REPLACE_WINDOW,
                  cursor="at", conversation_column="chat")
    with pytest.raises(ValueError, match="conversation days are kept per tenant"):
        TableSpec(source="s", name="t", columns=cols, tenant_column=None, merge_rule=MergeRule.REPLACE_WINDOW,
                  cursor="at", conversation_column="id")


@pytest.mark.parametrize("name", ["acme; DROP TABLE x", "ac me", "../etc", "acme'", "аcme", "Acme", "", "a" * 64,
                                  "acme\n", "1acme"])
def test_identifier_allow_list_refuses(name):
    with pytest.raises(UnsafeIdentifierError):
        check_identifier(name, "company")


def test_identifier_allow_list_accepts_plain_names():
    assert check_identifier("acme_2", "company") == "acme_2"


def test_a_day_that_has_not_begun_is_refused_and_today_may_be_loaded():
    """A manual run for 2030-01-01 (a mistyped year) used to succeed with 0 rows in every table."""
    now = dt.datetime(2026, 12, 2, 0, 53, tzinfo=UTC)
    for params in ({"date": "2030-01-01"}, {"date": "2026-12-03"},
                   {"start_date": "2026-11-30", "end_date": "2026-12-03"}):
        with pytest.raises(ValueError, match=r"2\d{3}-\d\d-\d\d has not begun yet \(it is 2026-12-02 00:53 UTC\)"):
            resolve_window(params, None, None, now=now)
    assert resolve_window({"date": "2026-12-02"}, None, None, now=now)["end"] == "2026-12-03T00:00:00+00:00"
    assert resolve_window({"start_date": "2026-11-30", "end_date": "2026-12-02"}, None, None, now=now)


def test_a_scheduled_run_rechecks_the_configured_days_before_its_own_and_its_gate_covers_them(tmp_path,
                                                                                                monkeypatch):
    from chat_ingest.dag_factory import recheck_days
    from chat_ingest.windows import checked_window, rechecked_days

    day = dt.datetime(2026, 11, 18, tzinfo=UTC)
    interval = (day, day + dt.timedelta(days=1))
    scheduled = resolve_window({}, *interval, run_type="scheduled", recheck_days=2)
    assert scheduled["recheck_start"] == "2026-11-16T00:00:00+00:00"
    assert rechecked_days(scheduled) == [(day - dt.timedelta(days=2), day - dt.timedelta(days=1)),
                                         (day - dt.timedelta(days=1), day)]
    assert checked_window(scheduled) == (day - dt.timedelta(days=2), interval[1])
    for run_type, params in (("manual", {"date": "2026-11-18"}), ("backfill", {}), ("scheduled", {})):
        window = resolve_window(params, *interval, run_type=run_type, recheck_days=2 if run_type != "scheduled" else 0)
        assert "recheck_start" not in window and rechecked_days(window) == [] and checked_window(window) == interval
    config = tmp_path / "sources.yaml"
    monkeypatch.setenv("CHAT_INGEST_CONFIG", str(config))
    for text, days in (("{}\n", 1), ("recheck_days: 0\n", 0), ("recheck_days: 3\n", 3)):
        config.write_text(text)
        assert recheck_days() == days
    for text in ("recheck_days: -1\n", "recheck_days: 8\n", "recheck_days: '1'\n", "recheck_days: true\n"):
        config.write_text(text)
        with pytest.raises(ValueError, match="recheck_days: expected whole days from 0 to 7"):
            recheck_days()


def test_a_load_summary_is_plain_json_as_the_xcom_tab_shows_it():
    """Tuples in a task's return value reach the UI's XCom tab wrapped in Airflow's serializer's
    ``__classname__`` / ``__data__``; the summary holds lists instead."""
    import json

    from chat_ingest.landing.batch import LoadResult

    summary = LoadResult(run_id="r", source="botslovers", table="messages", tenant="acme", window_start="a",
                         window_end="b", ignored_columns=("mood",), changed_days=("2026-11-10",)).as_dict()
    assert json.loads(json.dumps(summary)) == summary
    assert (summary["ignored_columns"], summary["changed_days"]) == (["mood"], ["2026-11-10"])


def test_window_from_the_date_param_or_the_data_interval():
    assert resolve_window({"date": "2026-11-18"}, None, None) == {
        "start": "2026-11-18T00:00:00+00:00", "end": "2026-11-19T00:00:00+00:00", "full_refresh": False}
    assert resolve_window({"start_date": "2026-11-16", "end_date": "2026-11-18", "full_refresh": True}, None, None) == {
        "start": "2026-11-16T00:00:00+00:00", "end": "2026-11-19T00:00:00+00:00", "full_refresh": True}
    with pytest.raises(ValueError, match="before start_date"):
        resolve_window({"start_date": "2026-11-18", "end_date": "2026-11-16"}, None, None)
    with pytest.raises(ValueError, match="not both"):
        resolve_window({"date": "2026-11-18", "start_date": "2026-11-16"}, None, None)
    start = dt.datetime(2026, 11, 18, tzinfo=UTC)
    assert resolve_window({}, start, start + dt.timedelta(days=1))["end"] == "2026-11-19T00:00:00+00:00"
    # as a task's context hands them over: pendulum, whose arithmetic once made a bound naive
    first, after = pendulum.datetime(2026, 11, 18, tz="UTC"), pendulum.datetime(2026, 11, 19, tz="Europe/Berlin")
    assert resolve_window({}, first, after) == {
        "start": "2026-11-18T00:00:00+00:00", "end": "2026-11-18T23:00:00+00:00", "full_refresh": False}
    with pytest.raises(ValueError, match="empty window"):
        resolve_window({}, start, start)
    with pytest.raises(ValueError, match="no window"):
        resolve_window({"date": None}, None, None)


def test_contradicting_params_fail_the_run_without_retry():
    from airflow.sdk.exceptions import AirflowFailException

    for params in ({"date": "2026-11-18", "start_date": "2026-11-16"}, {"end_date": "2026-11-18"},
                   {"start_date": "2026-11-18", "end_date": "2026-11-16"}):
        with pytest.raises(AirflowFailException):  # Airflow fails such a task at once, retries left or not
            resolve_window(params, None, None)


def test_a_backfill_run_loads_its_own_interval_whatever_the_form_says(caplog):
    start = dt.datetime(2026, 11, 18, tzinfo=UTC)
    for params in ({"date": "2026-11-01"}, {"start_date": "2026-11-01", "end_date": "2026-11-03"},
                   {"date": "2026-11-01", "start_date": "2026-11-02", "tenants": ["acme"], "full_refresh": True}):
        window = resolve_window(params, start, start + dt.timedelta(days=1), run_type="backfill")
        assert (window["start"], window["end"]) == ("2026-11-18T00:00:00+00:00", "2026-11-19T00:00:00+00:00")
        assert window["full_refresh"] is bool(params.get("full_refresh"))
    assert "a backfill run loads its own interval: ignoring date=2026-11-01" in caplog.text
    assert resolve_window({"date": "2026-11-01"}, start, start + dt.timedelta(days=1), run_type="manual")["start"] \
        == "2026-11-01T00:00:00+00:00"


def test_suite_is_generated_from_the_spec(tmp_path, monkeypatch):
    config = tmp_path / "sources.yaml"
    config.write_text("validation:\n  default_mostly: 1.0\n  mostly:\n    botslovers.chat_agent_log.event: 0.95\n")
    monkeypatch.setenv("CHAT_INGEST_CONFIG", str(config))
    now = dt.datetime(2026, 11, 20, tzinfo=UTC)
    suite = {(type(e).__name__, getattr(e, "column", None)): e
             for e in build_expectations(botslovers.CHAT_AGENT_LOG, now=now)}
    event = suite[("ExpectColumnValuesToBeInSet", "event")]
    assert set(event.value_set) == set(botslovers.AGENT_EVENTS) and event.mostly == 0.95
    assert suite[("ExpectColumnValuesToNotBeNull", "id")].mostly == 1.0
    assert suite[("ExpectColumnValuesToBeUnique", "id")]
    rating = [e for (kind, col), e in suite.items() if col == "response_rating"]
    assert rating and rating[0].min_value == 1 and rating[0].max_value == 5
    future = [e for (kind, col), e in suite.items() if col == "updated_at" and kind == "ExpectColumnValuesToBeBetween"]
    # the loader's own bound (one rule): what it lands never fails the gate for being in the future
    assert future[0].max_value == now + FUTURE_TOLERANCE and future[0].min_value == EARLIEST_TIMESTAMP


def test_values_the_seed_gives_by_example_are_a_warning_and_a_closed_list_a_failure():
    """Where a seed lists every value the gate fails on another; where it gives examples (A8 ``msg_type``:
    "a text/HyperLink/Attachments", Unless' log ``type`` and ``messageFormat``) another value is a warning."""
    from chat_ingest.sources import unless

    def in_set(spec, column):
        return [e for e in build_expectations(spec) if type(e).__name__ == "ExpectColumnValuesToBeInSet"
                and e.column == column]

    for spec, column in ((a8.MESSAGES, "msg_type"), (unless.LOGS, "type"), (unless.LOGS, "message_format")):
        [expectation] = in_set(spec, column)
        assert expectation.severity.value == "warning"
        assert set(expectation.value_set) == set(spec.column(column).examples)
    assert {"text", "HyperLink", "Attachments"} <= set(a8.MESSAGES.column("msg_type").examples)
    for spec, column in ((a8.MESSAGES, "msg_from"), (unless.LOGS, "sender"), (botslovers.MESSAGES, "sender_type")):
        [expectation] = in_set(spec, column)
        assert expectation.severity.value == "critical"
    with pytest.raises(ValueError, match="exclude each other"):
        Column("kind", "text", allowed=("a",), examples=("b",))


def test_a_scheduled_run_waits_the_configured_settling_time_and_a_deadline_before_it_is_refused(tmp_path,
                                                                                                   monkeypatch):
    from chat_ingest.dag_factory import daily_schedule

    config = tmp_path / "sources.yaml"
    monkeypatch.setenv("CHAT_INGEST_CONFIG", str(config))
    for text, settle in (("{}\n", dt.timedelta(hours=1)), ("settle_minutes: 0\n", dt.timedelta(0)),
                         ("settle_minutes: 90\nalerts: {landed_by: '06:00'}\n", dt.timedelta(minutes=90))):
        config.write_text(text)
        assert daily_schedule().settle == settle
    for text, message in (("settle_minutes: -5\n", "expected whole minutes"),
                          ("settle_minutes: 1440\n", "expected whole minutes"),
                          ("settle_minutes: '1h'\n", "expected whole minutes"),
                          ("settle_minutes: 120\nalerts: {landed_by: '01:30'}\n", "every day would raise the alert")):
        config.write_text(text)
        with pytest.raises(ValueError, match=message):
            daily_schedule()


def test_the_configuration_is_read_again_once_the_file_changes_and_a_caller_cannot_alter_it(tmp_path, monkeypatch):
    from chat_ingest.config import load_config, mostly_for

    config = tmp_path / "sources.yaml"
    config.write_text("validation:\n  default_mostly: 1.0\n")
    monkeypatch.setenv("CHAT_INGEST_CONFIG", str(config))
    assert mostly_for("botslovers", "messages", "id", "unique") == 1.0
    load_config()["validation"]["default_mostly"] = 0.5  # a caller's copy
    assert mostly_for("botslovers", "messages", "id", "unique") == 1.0
    config.write_text("validation:\n  default_mostly: 0.9\n")  # an operator's edit, however soon
    assert mostly_for("botslovers", "messages", "id", "unique") == 0.9
    config.write_text("- not a mapping\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_config()
    config.unlink()
    with pytest.raises(FileNotFoundError, match="set CHAT_INGEST_CONFIG"):
        load_config()
