"""Botslovers end to end against the chdb ClickHouse stand-in and the real warehouse."""

from __future__ import annotations

import datetime as dt
import json
import time

import psycopg
import pytest

from chat_ingest.hooks.clickhouse import ClickHouseHttpHook, UnsafeIdentifierError
from chat_ingest.operators.botslovers import BotsloversToStagingOperator
from chat_ingest.sources import botslovers
from chat_ingest.validation import ValidationFailed, run_gate
from chat_ingest.warehouse import connect
from chat_ingest.windows import day_window
from tests.support.sandbox import load_window
from tests.support.sources import TEST_COMPANY, agent_log, ch_rows, message
from tests.support.sources import load_botslovers as load

pytestmark = pytest.mark.integration


def checksum(sandbox, table: str) -> str:
    with sandbox.warehouse() as conn:
        return conn.execute(f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM staging.{table} t"
                            ).fetchone()[0]


# -- the hook -------------------------------------------------------------------------------------


def test_hook_tests_its_connection(sandbox):
    ok, message_ = ClickHouseHttpHook().test_connection()
    assert ok and "ClickHouse 26" in message_


def test_hook_reports_a_wrong_password_without_revealing_it(sandbox, monkeypatch):
    conn = json.loads(sandbox.env["AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE"])
    monkeypatch.setenv("AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE", json.dumps({**conn, "password": "Wr0ng-Pa55"}))
    ok, message_ = ClickHouseHttpHook().test_connection()
    assert not ok and "Authentication failed" in message_ and "Wr0ng-Pa55" not in message_


@pytest.mark.parametrize("company", ["acme; DROP TABLE x", "acme`", "../acme", "acme'--", "аcme", "ACME", ""])
def test_hostile_company_is_refused_before_any_query(company, monkeypatch):
    # an unreachable server: reaching the network would raise a connection error instead
    monkeypatch.setenv("AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE", "clickhouse://u:p@127.0.0.1:9/default")
    with pytest.raises(UnsafeIdentifierError, match="refusing company"):
        load(company, "messages", dt.date(2026, 11, 1))


def test_missing_company_table_fails_clearly(sandbox):
    with pytest.raises(Exception, match="'messages_nosuchco' does not exist"):
        load("nosuchco", "messages", sandbox.days[0])


# -- landing --------------------------------------------------------------------------------------


def test_a_day_lands_exactly_the_sources_rows(clean_warehouse):
    sandbox = clean_warehouse
    day = sandbox.days[1]
    start, end = day_window(day)
    ch = sandbox.clickhouse_admin()
    for company in sandbox.manifest["botslovers"]["companies"]:
        for table in ("messages", "agent_status_logs"):
            spec = botslovers.TABLES[table]
            summary = load(company, table, day)
            expected = ch.command(
                f"SELECT uniqExact(id) FROM {table}_{company} WHERE {spec.cursor} >= {{s:DateTime}} AND "
                f"{spec.cursor} < {{e:DateTime}}", parameters={"s": start.replace(tzinfo=None),
                                                              "e": end.replace(tzinfo=None)})
            extracted = ch.command(
                f"SELECT count() FROM {table}_{company} WHERE {spec.cursor} >= {{s:DateTime}} AND "
                f"{spec.cursor} < {{e:DateTime}}", parameters={"s": start.replace(tzinfo=None),
                                                              "e": end.replace(tzinfo=None)})
            with sandbox.warehouse() as conn:
                landed = conn.execute(
                    f"SELECT count(*) FROM staging.botslovers_{table} WHERE company = %s AND {spec.cursor} >= %s "
                    f"AND {spec.cursor} < %s", (company, start, end)).fetchone()[0]
            assert expected > 0 and landed == expected, (company, table)
            assert summary["rows_extracted"] == extracted
            assert summary["rows_landed"] == expected and summary["rows_duplicate"] == extracted - expected
    with sandbox.warehouse() as conn:
        logged = conn.execute("SELECT count(*), sum(rows_landed) FROM audit.load_log").fetchone()
    assert logged[0] == 4 and logged[1] > 0


def test_rerun_and_overlapping_runs_change_nothing(clean_warehouse):
    sandbox = clean_warehouse
    d0, d1 = sandbox.days[0], sandbox.days[1]
    for table in botslovers.TABLES:
        load("acme", table, d0)
        load("acme", table, d1)
    before = {t: checksum(sandbox, f"botslovers_{t}") for t in botslovers.TABLES}
    for table in botslovers.TABLES:
        again = load("acme", table, d1)
        assert again["rows_landed"] == 0 and again["rows_unchanged"] > 0
        load("acme", table, d0, days=2)  # an overlapping two-day window
    after = {t: checksum(sandbox, f"botslovers_{t}") for t in botslovers.TABLES}
    assert after == before


def test_a_rerun_of_an_unchanged_day_extracts_nothing_and_any_difference_loads_it_in_full(clean_warehouse, testco):
    sandbox = clean_warehouse
    at = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.timezone.utc)
    ch_rows(sandbox, f"messages_{TEST_COMPANY}", [
        message("m1", at), message("m2", at, text=None), message("m3", at + dt.timedelta(hours=1), text="ünïcode 👋")])
    first = load(TEST_COMPANY, "messages", at.date())
    assert (first["rows_landed"], first["road"] == "identical") == (3, False)
    again = load(TEST_COMPANY, "messages", at.date())
    assert again["road"] == "identical"  # ClickHouse's digest of the day equals staging's
    assert (again["rows_extracted"], again["rows_unchanged"], again["rows_landed"]) == (3, 3, 0)

    ch_rows(sandbox, f"messages_{TEST_COMPANY}", [message("m4", at)])  # the vendor adds a row
    grown = load(TEST_COMPANY, "messages", at.date())
    assert (grown["road"] == "identical", grown["rows_landed"], grown["rows_unchanged"]) == (False, 1, 3)

    with sandbox.warehouse() as conn:  # staging loses a row behind the loader's back
        conn.execute("DELETE FROM staging.botslovers_messages WHERE company = %s AND id = 'm1'", (TEST_COMPANY,))
    restored = load(TEST_COMPANY, "messages", at.date())
    assert (restored["road"] == "identical", restored["rows_landed"], restored["rows_unchanged"]) == (False, 1, 3)

    ch_rows(sandbox, f"messages_{TEST_COMPANY}", [message("", at)])  # a row staging never holds
    for _ in range(2):  # so the digests never match: every rerun quarantines it again
        summary = load(TEST_COMPANY, "messages", at.date())
        assert (summary["road"] == "identical", summary["rows_rejected"], summary["rows_unchanged"]) == (False, 1, 4)
    with sandbox.warehouse() as conn:
        logged = conn.execute("SELECT count(*) FROM audit.load_log WHERE source = 'botslovers' AND tenant = %s",
                              (TEST_COMPANY,)).fetchone()[0]
    assert logged == 6  # the identical rerun is logged like any load


def test_agent_log_row_updated_next_day_is_updated_not_duplicated(clean_warehouse, testco):
    sandbox = clean_warehouse
    d = dt.datetime(2026, 11, 10, 22, 0, tzinfo=dt.timezone.utc)
    ch_rows(sandbox, f"chat_agent_log_{TEST_COMPANY}", [agent_log("late-1", d)])
    load(TEST_COMPANY, "chat_agent_log", d.date())
    # the vendor updates the row the next morning: left_at, rating and updated_at change
    ch_rows(sandbox, f"chat_agent_log_{TEST_COMPANY}", [agent_log(
        "late-1", d + dt.timedelta(hours=11), joined_at=d, created_at=d, left_at=d + dt.timedelta(hours=1),
        response_rating=5)])
    load(TEST_COMPANY, "chat_agent_log", d.date() + dt.timedelta(days=1))
    with sandbox.warehouse() as conn:
        rows = conn.execute("SELECT left_at, response_rating, updated_at FROM staging.botslovers_chat_agent_log "
                            "WHERE company = %s AND id = 'late-1'", (TEST_COMPANY,)).fetchall()
    assert rows == [(d + dt.timedelta(hours=1), 5, d + dt.timedelta(hours=11))]
    # replaying the first day (an older version) does not roll the row back
    load(TEST_COMPANY, "chat_agent_log", d.date())
    with sandbox.warehouse() as conn:
        assert conn.execute("SELECT response_rating FROM staging.botslovers_chat_agent_log "
                            "WHERE id = 'late-1'").fetchone() == (5,)


def test_untypable_rows_are_quarantined_with_their_reason(clean_warehouse, testco):
    sandbox = clean_warehouse
    at = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.timezone.utc)
    ch_rows(sandbox, f"messages_{TEST_COMPANY}", [
        message("good-1", at), message("", at), message("nul-1", at, text="card\x00number"), message("good-2", at),
    ])
    summary = load(TEST_COMPANY, "messages", at.date(), run_id="run-quarantine")
    assert (summary["rows_extracted"], summary["rows_landed"], summary["rows_rejected"]) == (4, 2, 2)
    with sandbox.warehouse() as conn:
        rejected = conn.execute(
            "SELECT payload->>'id', reason, run_id, source, table_name, tenant FROM audit.rejected_records "
            "ORDER BY 1").fetchall()
        landed = [r[0] for r in conn.execute("SELECT id FROM staging.botslovers_messages ORDER BY 1")]
    assert landed == ["good-1", "good-2"]
    assert rejected == [
        ("", "id: empty key", "run-quarantine", "botslovers", "messages", TEST_COMPANY),
        ("nul-1", "text: contains a NUL byte", "run-quarantine", "botslovers", "messages", TEST_COMPANY),
    ]


def test_missing_source_column_fails_naming_it(clean_warehouse, testco):
    testco.command(f"ALTER TABLE messages_{TEST_COMPANY} DROP COLUMN language")
    with pytest.raises(Exception, match="no longer delivers column\\(s\\) language"):
        load(TEST_COMPANY, "messages", dt.date(2026, 11, 10))
    with clean_warehouse.warehouse() as conn:  # refused before anything was written
        assert conn.execute("SELECT to_regclass('staging.botslovers_messages')").fetchone()[0] is None


# -- the gate -------------------------------------------------------------------------------------


def test_gate_fails_on_an_unknown_event_naming_value_and_count(clean_warehouse, testco):
    sandbox = clean_warehouse
    at = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.timezone.utc)
    ch_rows(sandbox, f"chat_agent_log_{TEST_COMPANY}", [
        agent_log("ev-1", at), agent_log("ev-2", at, event="agent_vanished"),
        agent_log("ev-3", at, event="agent_vanished"), agent_log("ev-4", at, response_rating=9),
    ])
    load(TEST_COMPANY, "chat_agent_log", at.date(), run_id="run-gate")
    spec = botslovers.CHAT_AGENT_LOG
    start, end = day_window(at.date())
    with connect() as conn, pytest.raises(ValidationFailed) as failure:
        run_gate(conn, sandbox.warehouse_dsn.replace("postgresql://", "postgresql+psycopg2://"), spec,
                 run_id="run-gate", start=start, end=end, tenants=[TEST_COMPANY])
    message_ = str(failure.value)
    assert "staging.botslovers_chat_agent_log" in message_
    assert "event" in message_ and "'agent_vanished' ×2" in message_
    assert "response_rating" in message_ and "9 ×1" in message_
    with sandbox.warehouse() as conn:
        failed = conn.execute("SELECT column_name, unexpected_count FROM audit.validation_results "
                              "WHERE run_id = 'run-gate' AND NOT success ORDER BY 1").fetchall()
        kept = conn.execute("SELECT count(*) FROM staging.botslovers_chat_agent_log").fetchone()[0]
    assert failed == [("event", 2), ("response_rating", 1)]
    assert kept == 4  # the rows stay in staging for inspection


def test_gate_passes_a_clean_day_and_writes_its_page_in_the_one_data_docs_site(clean_warehouse):
    from chat_ingest.validation import build_data_docs_index, data_docs_site

    sandbox = clean_warehouse
    day = sandbox.days[0]
    load("acme", "agent_status_logs", day, run_id="run-clean")
    start, end = day_window(day)
    dsn = sandbox.warehouse_dsn.replace("postgresql://", "postgresql+psycopg2://")
    with connect() as conn:
        gate = run_gate(conn, dsn, botslovers.AGENT_STATUS_LOGS, run_id="run-clean", start=start, end=end,
                        tenants=["acme"])
        other = run_gate(conn, dsn, botslovers.MESSAGES, run_id="run-clean", start=start, end=end, tenants=["acme"])
    assert gate.outcomes and all(o.success for o in gate.outcomes)
    assert {o.column for o in gate.outcomes} >= {"old_status", "new_status", "id", "status_changed_at"}
    site = data_docs_site()
    page = site / gate.docs_page
    assert page.is_file() and gate.docs_page.startswith("validations/botslovers_agent_status_logs_suite/run-clean/")
    assert "status_changed_at" in page.read_text()
    assert build_data_docs_index()  # built when opened (the plugin's page), not by each validation
    index = (site / "index.html").read_text()  # one site: both tables' validations are listed in it
    assert "botslovers_agent_status_logs" in index and "botslovers_messages" in index and other.docs_page
    gx_files = "".join(p.read_text(errors="ignore") for p in site.parents[2].rglob("*.yml"))
    assert sandbox.env["CHAT_INGEST_WAREHOUSE_DSN"].split("@")[0].split(":")[-1] not in gx_files  # no password


def test_the_data_docs_index_lists_the_newest_validations_only(clean_warehouse, monkeypatch):
    """GX builds the index from every result it lists: bounded, a month of backfill does not make it
    slower and slower.  Validations leave it to be built when opened; older ones keep their pages."""
    from chat_ingest import validation

    sandbox = clean_warehouse
    day = sandbox.days[0]
    load("acme", "agent_status_logs", day)
    start, end = day_window(day)
    dsn = sandbox.warehouse_dsn.replace("postgresql://", "postgresql+psycopg2://")
    monkeypatch.setattr(validation, "DATA_DOCS_INDEX_LIMIT", 2)
    from great_expectations.data_context.store.tuple_store_backend import TupleFilesystemStoreBackend

    listed_history = []  # a validation that lists the project's results costs more with every one
    list_keys = TupleFilesystemStoreBackend.list_keys
    monkeypatch.setattr(TupleFilesystemStoreBackend, "list_keys", lambda backend, *a, **kw: (
        listed_history.append(backend.full_base_directory), list_keys(backend, *a, **kw))[1])
    suite_page = validation.data_docs_site() / "expectations" / "botslovers_agent_status_logs_suite.html"
    before = time.time_ns()
    with connect() as conn:
        pages = [run_gate(conn, dsn, botslovers.AGENT_STATUS_LOGS, run_id=f"run-index-{i}", start=start, end=end,
                          tenants=["acme"]).docs_page for i in range(3)]
    assert not [d for d in listed_history if "validations" in d], listed_history
    assert (validation.data_docs_site() / "static").is_dir()  # the pages' styles, copied with the first page
    index = validation.data_docs_site() / "index.html"
    assert validation.data_docs_index_outdated() and "run-index" not in (index.read_text() if index.exists() else "")
    assert not suite_page.exists() or suite_page.stat().st_mtime_ns < before  # the suite's page too: on view
    assert validation.build_data_docs_index() and not validation.build_data_docs_index()  # once, until the next
    listed = index.read_text()
    assert [f"run-index-{i}" in listed for i in range(3)] == [False, True, True]
    assert all((validation.data_docs_site() / page).is_file() for page in pages)
    assert suite_page.stat().st_mtime_ns >= before and "old_status" in suite_page.read_text()


def test_a_batch_of_tenants_lands_each_in_turn_and_names_the_ones_that_failed(clean_warehouse):
    """Many tenants in one task instance (max_load_tasks_per_table): each tenant lands in its own
    transaction with its own summary; one that fails does not stop the others, and the task fails
    naming it (not retried when every failure is final, as a refused name is)."""
    from airflow.sdk.exceptions import AirflowFailException

    sandbox = clean_warehouse
    day = sandbox.days[0]
    companies = sandbox.manifest["botslovers"]["companies"]
    batch = BotsloversToStagingOperator(task_id="load_messages", tenants=companies, table="messages",
                                        window=load_window(day))
    summaries = batch.execute({"run_id": "run-batch"})
    assert list(summaries) == companies and all(s["rows_landed"] > 0 for s in summaries.values())
    assert {s["tenant"] for s in summaries.values()} == set(companies)
    bad = BotsloversToStagingOperator(task_id="load_agent_status_logs", tenants=["no'such", companies[0]],
                                      table="agent_status_logs", window=load_window(day))
    with pytest.raises(AirflowFailException, match=r"1 of 2 tenants of the batch failed: no'such: refusing"):
        bad.execute({"run_id": "run-batch-bad"})
    with connect() as conn:
        landed = conn.execute("SELECT DISTINCT company FROM staging.botslovers_agent_status_logs "
                              "WHERE _run_id = 'run-batch-bad'").fetchall()
    assert landed == [(companies[0],)]  # the good tenant after the refused one landed


# -- the DAG, as real Airflow runs ------------------------------------------------------------------


def _asset_events(airflow, run_id: str) -> set[str]:
    with psycopg.connect(airflow.metadata_dsn) as conn:
        return {r[0] for r in conn.execute(
            "SELECT a.name FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE e.source_run_id = %s",
            (run_id,))}


def _task_states(airflow, run_id: str) -> dict[str, str]:
    with psycopg.connect(airflow.metadata_dsn) as conn:
        return {f"{t}[{m}]" if m >= 0 else t: s for t, m, s in conn.execute(
            "SELECT task_id, map_index, state FROM task_instance WHERE run_id = %s", (run_id,))}


def test_dag_run_lands_validates_and_emits_assets(clean_warehouse, airflow, tmp_path):
    sandbox = clean_warehouse
    day = sandbox.days[0]
    run_id = airflow.trigger_day("botslovers_ingest", day, tmp_path / "airflow.log")
    states = _task_states(airflow, run_id)
    assert set(states.values()) == {"success"} and "load_messages[1]" in states
    assert _asset_events(airflow, run_id) == {f"staging.botslovers_{t}" for t in botslovers.TABLES}
    with sandbox.warehouse() as conn:
        companies = {r[0] for r in conn.execute("SELECT DISTINCT company FROM staging.botslovers_messages")}
        loads = conn.execute("SELECT count(*) FROM audit.load_log WHERE run_id = %s", (run_id,)).fetchone()[0]
        checks = conn.execute("SELECT bool_and(success) FROM audit.validation_results WHERE run_id = %s",
                              (run_id,)).fetchone()[0]
    assert companies == set(sandbox.manifest["botslovers"]["companies"])
    assert loads == 6 and checks is True


def test_failed_gate_fails_the_run_and_withholds_the_asset(clean_warehouse, airflow, tmp_path):
    sandbox = clean_warehouse
    day = sandbox.days[2]
    at = dt.datetime.combine(day, dt.time(12), dt.timezone.utc)
    ch_rows(sandbox, "chat_agent_log_acme", [agent_log("bad-event-1", at, event="agent_vanished")])
    try:
        with pytest.raises(RuntimeError, match="ended failed"):  # not retried: a failed gate is final
            airflow.trigger_day("botslovers_ingest", day, tmp_path / "airflow.log")
        run_id, _ = airflow.last_run_state("botslovers_ingest")
        states = _task_states(airflow, run_id)
        assert states["validate_chat_agent_log"] == "failed"
        assert states["validate_messages"] == "success"
        assert _asset_events(airflow, run_id) == {"staging.botslovers_messages",
                                                  "staging.botslovers_agent_status_logs"}
        assert "agent_vanished" in (tmp_path / "airflow.log").read_text()
    finally:
        sandbox.clickhouse_admin().command(
            "ALTER TABLE chat_agent_log_acme DELETE WHERE id = 'bad-event-1' SETTINGS mutations_sync = 1")


def test_hook_speaks_https_and_verifies_the_certificate(clean_warehouse, monkeypatch):
    sandbox = clean_warehouse
    conn = json.loads(sandbox.env["AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE"])
    https = {**conn, "port": int(sandbox.env["SANDBOX_CLICKHOUSE_HTTPS_URL"].rsplit(":", 1)[1])}
    # without the sandbox CA the server's certificate is refused: TLS is really in use
    monkeypatch.setenv("AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE", json.dumps({**https, "extra": {"secure": True}}))
    ok, message_ = ClickHouseHttpHook().test_connection()
    assert not ok and "CERTIFICATE_VERIFY_FAILED" in message_
    monkeypatch.setenv("AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE", json.dumps(
        {**https, "extra": {"secure": True, "client_kwargs": {"ca_cert": sandbox.env["SANDBOX_TLS_CA"]}}}))
    assert ClickHouseHttpHook().test_connection()[0]
    summary = load("acme", "messages", sandbox.days[0])
    assert summary["rows_landed"] > 0


def test_an_empty_day_lands_as_empty_and_says_so(clean_warehouse):
    summary = load("acme", "messages", dt.date(2026, 1, 1), run_id="run-empty")
    assert (summary["rows_extracted"], summary["rows_landed"]) == (0, 0)
    with clean_warehouse.warehouse() as conn:
        assert conn.execute("SELECT rows_extracted FROM audit.load_log WHERE run_id = 'run-empty'").fetchall() == [(0,)]


def test_a_long_load_logs_its_progress_in_rows(clean_warehouse, caplog):
    """Every progress interval (here: every batch) the loader logs rows so far and the rate."""
    import dataclasses
    import logging

    from chat_ingest.staging import StagingLoader
    from chat_ingest.warehouse import ensure_schema

    sandbox = clean_warehouse
    day = sandbox.days[1]
    start, end = day_window(day)
    company = sandbox.manifest["botslovers"]["companies"][0]
    spec = botslovers.TABLES["messages"]
    extractor = BotsloversToStagingOperator(task_id="progress", tenant=company, table="messages",
                                            window={"start": start.isoformat(), "end": end.isoformat()},
                                            max_block_size=5)
    caplog.set_level(logging.INFO, logger="chat_ingest.landing")
    with connect() as conn:
        ensure_schema(conn)
        loader = StagingLoader(conn, spec, run_id="progress", tenant=company, window_start=start, window_end=end,
                               progress_every_seconds=0)
        # Arrow batches, so the loader counts rows (a COPY data stream is counted in bytes)
        result = loader.land(dataclasses.replace(extractor.extraction(spec, start, end), copy=None))
    progress = [r.getMessage() for r in caplog.records if "rows so far" in r.getMessage()]
    assert result.rows_extracted > 0 and progress
    assert progress[-1].startswith(f"{spec.qualified_name} [{company}]: {result.rows_extracted:,} rows so far")
