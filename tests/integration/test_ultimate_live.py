"""Ultimate as the vendor serves it today: the v3 export at every base, records in the live form, files
that complete late, and days whose records cannot land, through the real stand-in and warehouse."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid

import pytest
import yaml

from chat_ingest.operators.ultimate import UltimateToStagingOperator
from chat_ingest.windows import day_window
from sandbox.generator import generate
from sandbox.ultimate_server import ZENDESK_PREFIX, UltimateConfig, UltimateHTTPServer
from tests.support.reporting import build
from tests.support.sandbox import TEST_DAYS, TEST_START

pytestmark = pytest.mark.integration

BOTS = ("ult-bank", "ult-telco")
#: Columns only the Gen3 export fills: NULL in the seed's form, so left out where the forms are compared.
GEN3_REPORTING = {"conversations": ("automated_resolution", "resolution_tier"),
                  "daily_bot_kpis": ("automated_resolution_conversations", "automated_resolution_rate")}


def connection(sandbox, host: str, port: int | None, api_version: str | None) -> str:
    """An ``ultimate_export`` connection with the sandbox's token and organization."""
    conn = json.loads(sandbox.env["AIRFLOW_CONN_ULTIMATE_EXPORT"])
    extra = {k: v for k, v in conn["extra"].items() if k != "api_version"}
    if api_version:
        extra["api_version"] = api_version
    return json.dumps({**conn, "host": host, "port": port, "extra": extra})


@pytest.fixture(scope="module")
def live_export(sandbox, tmp_path_factory):
    """The session's dataset written again with its Ultimate files in the live v3 form (upper-case keys,
    Gen3 fields, ``CONVERSATION_DATA``, numeric counts, one day as JSON Lines, no file for a day without
    conversations), served by a second stand-in on loopback; yields its URL (``http://127.0.0.1:port``)."""
    root = tmp_path_factory.mktemp("ultimate-live")
    manifest = generate(root, seed=11, days=TEST_DAYS, start=TEST_START, per_day=12, ultimate_form="live")
    assert manifest["ultimate"]["form"] == "live"
    conn = json.loads(sandbox.env["AIRFLOW_CONN_ULTIMATE_EXPORT"])
    server = UltimateHTTPServer(("127.0.0.1", 0), UltimateConfig(
        export_root=root / "ultimate", token=conn["password"], organization_id=conn["extra"]["organization_id"],
        admin_token=uuid.uuid4().hex))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture
def live_connection(sandbox, live_export, monkeypatch):
    """``ultimate_live``: the live stand-in at a Zendesk-style base, ``<url>/ai-agents/api``, on v3."""
    monkeypatch.setenv("AIRFLOW_CONN_ULTIMATE_LIVE", connection(sandbox, live_export[1] + ZENDESK_PREFIX, None, "v3"))
    return "ultimate_live"


def days() -> list[dt.date]:
    """The day before the dataset (no conversation ended then: v3 answers 404), its days, and the day
    after (conversations that ended after the last midnight)."""
    return [TEST_START + dt.timedelta(days=n) for n in range(-1, TEST_DAYS + 1)]


def land(day: dt.date, bot: str, conn_id: str = "ultimate_export", run_id: str | None = None,
         window: dict | None = None) -> dict:
    start, end = day_window(day)
    op = UltimateToStagingOperator(task_id="load", tenant=bot, ultimate_conn_id=conn_id,
                                   window=window or {"start": start.isoformat(), "end": end.isoformat()})
    return op.execute({"run_id": run_id or f"test-{uuid.uuid4().hex[:8]}"})


def reporting_rows(sandbox) -> dict[str, list]:
    """Every Ultimate row of the reporting tables, the Gen3-only columns left out, sorted."""
    rows = {}
    with sandbox.warehouse() as conn:
        for table in ("conversations", "daily_bot_kpis", "intent_metrics"):
            columns = [c for (c,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'reporting' "
                "AND table_name = %s ORDER BY ordinal_position", (table,)) if c not in GEN3_REPORTING.get(table, ())]
            rows[table] = sorted(conn.execute(f"SELECT {', '.join(columns)} FROM reporting.{table} "
                                              "WHERE source = 'ultimate'").fetchall(), key=repr)
    return rows


@pytest.mark.parametrize("api_version, prefixed",
                         [("v3", False), ("v2", False), ("v3", True), ("v2", True), (None, True)])
def test_every_api_version_at_every_base_lists_the_same_files_and_tests_ok(sandbox, live_export, monkeypatch,
                                                                          api_version, prefixed):
    """v3 (the default when the connection names none) and the legacy v2, at a plain base (host and port,
    as api.ultimate.ai) and at a Zendesk-style base with a path prefix: the same files of a day, and the
    connection's Test passes naming the endpoint it asked.  A day without an export is None on v3 (its
    404), an empty list on v2."""
    from chat_ingest.hooks.ultimate import UltimateExportHook

    url = live_export[1]
    port = int(url.rsplit(":", 1)[1])
    monkeypatch.setenv("AIRFLOW_CONN_ULTIMATE_VARIANT", connection(  # its schema is the sandbox's http
        sandbox, url + ZENDESK_PREFIX if prefixed else "127.0.0.1", None if prefixed else port, api_version))
    hook = UltimateExportHook("ultimate_variant", backoff_seconds=0.05)
    version = api_version or "v3"
    ok, message = hook.test_connection()
    assert ok, message
    assert f"{url}{ZENDESK_PREFIX if prefixed else ''}/data-export/{version}/get-signed-urls" in message
    day = TEST_START + dt.timedelta(days=1)
    files = sorted(u.split("?")[0].rsplit("/", 1)[1] for u in hook.get_signed_urls(day, "ult-bank"))
    assert files == [f"{day}.jsonl"]  # the live form's JSON Lines day
    assert hook.get_signed_urls(TEST_START - dt.timedelta(days=1), "ult-bank") == (None if version == "v3" else [])


def test_the_live_form_lands_what_the_seed_form_lands_and_every_reporting_value_is_equal(clean_warehouse,
                                                                                        live_connection):
    """The same conversations in the live v3 form (through v3 at a Zendesk base) and in the seed's form
    (the sandbox's own files): nothing of the live form is quarantined, its missing day is a 404 that
    lands nothing, its Gen3 fields land typed and its undocumented ones in ``extra`` as drift, and every
    reporting value equals the seed form's (the Gen3 columns aside, NULL in the seed's form)."""
    sandbox = clean_warehouse
    live = [land(day, bot, live_connection) for day in days() for bot in BOTS]
    for summary in live:
        for table in ("conversations", "intents"):
            assert summary[table]["rows_rejected"] == 0, summary[table]
    records = sum(s["conversations"]["rows_extracted"] for s in live)
    first = live[:len(BOTS)]
    assert all(s["conversations"]["unexported_days"] == [days()[0].isoformat()] for s in first)
    assert all(s["conversations"]["rows_extracted"] == 0 for s in first)
    drift = {}
    for summary in live:
        for name, rows in summary["conversations"]["drift"].items():
            drift[name] = drift.get(name, 0) + rows
    assert drift == {"INSTANCE_ACCOUNT_ID": records, "ZDP_META_PROCESSED_TIMESTAMP": records,
                     "CONVERSATION_END_DATE": records}
    with sandbox.warehouse() as conn:
        typed = conn.execute(
            "SELECT count(*), count(automated_resolution), count(resolution_tier), count(session_ended_timestamp), "
            "count(knowledge_fallback_count), count(knowledge_sources), count(*) FILTER (WHERE extra ? "
            "'INSTANCE_ACCOUNT_ID'), count(*) FILTER (WHERE conversation_end_time > conversation_start_time) "
            "FROM staging.ultimate_conversations").fetchone()
    assert typed == (records, *[records] * 7)
    build(sandbox)
    live_reporting = reporting_rows(sandbox)
    with sandbox.warehouse() as conn:
        gen3 = conn.execute("SELECT count(automated_resolution_rate), sum(automated_resolution_conversations) "
                            "FROM reporting.daily_bot_kpis WHERE source = 'ultimate'").fetchone()
        automated = conn.execute("SELECT count(*) FROM staging.ultimate_conversations WHERE automated_resolution "
                                 "AND bot_messages_count > 0").fetchone()[0]
        conn.execute("DROP SCHEMA staging, audit, reporting CASCADE")
    assert gen3[0] > 0 and gen3[1] == automated

    for day in days():
        for bot in BOTS:
            land(day, bot)
    build(sandbox)
    assert live_reporting["conversations"] and reporting_rows(sandbox) == live_reporting
    with sandbox.warehouse() as conn:
        assert conn.execute("SELECT count(*), count(automated_resolution_rate) FROM reporting.daily_bot_kpis "
                            "WHERE source = 'ultimate'").fetchone()[1] == 0  # the seed's form has no verdict


def test_a_dag_run_lands_the_live_form_through_v3_and_its_gate_reports_the_drift(clean_warehouse, airflow, live_export,
                                                                                tmp_path):
    """The real DAG, its connection pointed at the live stand-in: every task succeeds, nothing is
    quarantined, and the gate names the fields no column names."""
    import psycopg

    from sandbox.services import Airflow

    sandbox = clean_warehouse
    day = TEST_START + dt.timedelta(days=1)
    cli = Airflow({**airflow.env, "AIRFLOW_CONN_ULTIMATE_EXPORT": connection(
        sandbox, live_export[1] + ZENDESK_PREFIX, None, "v3")})
    run_id = cli.trigger_day("ultimate_ingest", day, tmp_path / "airflow.log")
    with psycopg.connect(airflow.metadata_dsn) as conn:
        states = dict(conn.execute("SELECT task_id, state FROM task_instance WHERE run_id = %s AND dag_id = "
                                   "'ultimate_ingest'", (run_id,)).fetchall())
    assert set(states.values()) == {"success"}, states
    expected = sum(len((live_export[0] / "ultimate" / bot / f"{day}.jsonl").read_text().splitlines()) for bot in BOTS)
    with sandbox.warehouse() as conn:
        landed = conn.execute("SELECT count(*), count(extra) FROM staging.ultimate_conversations").fetchone()
        rejected = conn.execute("SELECT count(*) FROM audit.rejected_records").fetchone()[0]
        drift = conn.execute("SELECT unexpected_values FROM audit.validation_results WHERE run_id = %s AND "
                             "table_name = 'conversations' AND expectation = 'undeclared_fields'", (run_id,)).fetchone()
    assert landed == (expected, expected) and rejected == 0
    assert {v["value"]: v["count"] for v in drift[0]} == {
        name: expected for name in ("INSTANCE_ACCOUNT_ID", "ZDP_META_PROCESSED_TIMESTAMP", "CONVERSATION_END_DATE")}


def test_a_file_that_grows_after_a_first_run_is_completed_by_the_next_scheduled_run(clean_warehouse, faults):
    """The vendor may still be building a day's file when it is first read (17, later 19 records): the
    next scheduled run rechecks the day before its own, lands the grown file and notes its days for
    the rebuild; a third run finds the file unchanged by its digest and rewrites nothing."""
    sandbox = clean_warehouse
    day = sandbox.days[1]
    expected = len(json.loads((sandbox.dataset / "ultimate" / "ult-bank" / f"{day}.json").read_text()))
    faults({"target": "download", "withhold_records": 2, "times": 1})
    first = land(day, "ult-bank")["conversations"]
    assert first["rows_landed"] == expected - 2
    next_start, next_end = day_window(day + dt.timedelta(days=1))
    scheduled = {"start": next_start.isoformat(), "end": next_end.isoformat(), "full_refresh": False,
                 "recheck_start": day_window(day)[0].isoformat()}
    second = land(day + dt.timedelta(days=1), "ult-bank", window=scheduled)["conversations"]
    [recheck] = second["rechecked"]
    assert recheck["window_start"] == day_window(day)[0].isoformat()
    assert (recheck["rows_landed"], recheck["rows_deleted"]) == (expected, expected - 2)
    assert recheck["changed_days"] and recheck["road"] != "identical"
    with sandbox.warehouse() as conn:
        held = conn.execute("SELECT count(*) FROM staging.ultimate_conversations WHERE export_date = %s "
                            "AND bot_id = 'ult-bank'", (day,)).fetchone()[0]
        noted = {d for (d,) in conn.execute("SELECT day FROM audit.changed_days WHERE source = 'ultimate' AND "
                                            "run_id = %s", (second["run_id"],))}
    assert held == expected and {dt.date.fromisoformat(d) for d in recheck["changed_days"]} <= noted
    third = land(day + dt.timedelta(days=1), "ult-bank", window=scheduled)["conversations"]["rechecked"][0]
    assert third["road"] == "identical" and third["rows_landed"] == 0


@pytest.fixture
def served(sandbox):
    """Serve records of a test's own as a day's file; the dataset's file comes back afterwards."""
    saved = {}

    def serve(bot: str, day: dt.date, records: list) -> None:
        path = sandbox.dataset / "ultimate" / bot / f"{day}.json"
        saved.setdefault(path, path.read_bytes())
        path.write_text(json.dumps(records))

    yield serve
    for path, body in saved.items():
        path.write_bytes(body)


def gate(sandbox, run_id: str, day: dt.date, bot: str):
    from chat_ingest.sources import ultimate
    from chat_ingest.validation import run_gate
    from chat_ingest.warehouse import connect

    start, end = day_window(day)
    with connect() as conn:
        return run_gate(conn, sandbox.warehouse_dsn.replace("postgresql://", "postgresql+psycopg2://"),
                        ultimate.CONVERSATIONS, run_id=run_id, start=start, end=end, tenants=[bot])


def test_a_day_whose_records_mostly_cannot_land_fails_its_gate_naming_why(clean_warehouse, served, tmp_path,
                                                                         monkeypatch):
    """Records the load cannot read (here: no conversation id under any spelling) are quarantined, and a
    day of mostly such records fails the gate with the commonest reasons and their counts, instead of
    passing on the few rows that landed; the rows stay in audit.  Within the configured tolerance, the
    same day passes."""
    from chat_ingest.validation import ValidationFailed

    sandbox = clean_warehouse
    day = sandbox.days[0]
    good = json.loads((sandbox.dataset / "ultimate" / "ult-telco" / f"{day}.json").read_text())
    broken = [{("CONV_ID" if k == "conversation_id" else k): v for k, v in r.items()} for r in good[1:]]
    served("ult-telco", day, [good[0], *broken])
    summary = land(day, "ult-telco", run_id="ult-mostly-bad")["conversations"]
    assert (summary["rows_landed"], summary["rows_rejected"]) == (1, len(broken))
    with pytest.raises(ValidationFailed) as failure:
        gate(sandbox, "ult-mostly-bad", day, "ult-telco")
    message = str(failure.value)
    assert f"{len(broken)} of {len(good)} rows of the window were quarantined" in message
    assert f"conversation_id: required value is missing ×{len(broken)}" in message
    with sandbox.warehouse() as conn:
        assert conn.execute("SELECT count(*) FROM audit.rejected_records WHERE run_id = 'ult-mostly-bad' "
                            "AND table_name = 'conversations'"
                            ).fetchone()[0] == len(broken)
    config = yaml.safe_load((sandbox.root / "sources.yaml").read_text())
    config["validation"] = {**config.get("validation", {}), "max_quarantined": {"ultimate.conversations": 0.99}}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("CHAT_INGEST_CONFIG", str(tmp_path / "sources.yaml"))
    outcome = next(o for o in gate(sandbox, "ult-mostly-bad", day, "ult-telco").outcomes
                   if o.expectation == "rows_quarantined")
    assert outcome.success and outcome.unexpected_count == len(broken)


def test_a_field_named_twice_is_quarantined_and_an_unknown_one_lands_in_extra_as_drift(clean_warehouse, served):
    """Top-level keys match whatever their case, so a record holding ``bot_id`` and ``BOT_ID`` names one
    field twice: quarantined with that reason.  A field no column names lands with its row, in
    ``extra``, and the load and the gate report it with its row count."""
    from chat_ingest.validation import ValidationFailed

    sandbox = clean_warehouse
    day = sandbox.days[0]
    good = json.loads((sandbox.dataset / "ultimate" / "ult-telco" / f"{day}.json").read_text())[:2]
    records = [dict(good[0], gen4_score={"value": 0.93}),
               dict(good[1], conversation_id="twice", BOT_ID=good[1]["bot_id"])]
    served("ult-telco", day, records)
    summary = land(day, "ult-telco", run_id="ult-twice")["conversations"]
    assert (summary["rows_landed"], summary["rows_rejected"]) == (1, 1)
    assert summary["drift"] == {"gen4_score": 1}
    with sandbox.warehouse() as conn:
        extra = conn.execute("SELECT extra FROM staging.ultimate_conversations").fetchall()
        reason = conn.execute("SELECT reason FROM audit.rejected_records WHERE run_id = 'ult-twice'").fetchone()[0]
    assert extra == [({"gen4_score": {"value": 0.93}},)]
    assert reason.startswith("the record names bot_id twice: as 'bot_id' and as 'BOT_ID'; ")
    with pytest.raises(ValidationFailed) as failure:  # one of two records quarantined: over the tolerance
        gate(sandbox, "ult-twice", day, "ult-telco")
    [drift] = [o for o in failure.value.outcomes if o.expectation == "undeclared_fields"]
    assert drift.severity == "warning" and drift.unexpected_values == [{"value": "gen4_score", "count": 1}]
