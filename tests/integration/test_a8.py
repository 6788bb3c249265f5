"""A8 end to end against the sandbox `a8` database and the real warehouse."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import psycopg
import pytest

from chat_ingest.operators.a8 import A8ToStagingOperator
from chat_ingest.sources import a8
from chat_ingest.validation import ValidationFailed, run_gate
from chat_ingest.warehouse import connect
from chat_ingest.windows import day_window
from tests.support.sandbox import load_window, staging_checksum
from tests.support.sources import a8_conn

pytestmark = pytest.mark.integration


def load(table: str, day: dt.date, tenant: str | None, days: int = 1, run_id: str | None = None) -> dict:
    op = A8ToStagingOperator(task_id=f"load_{table}", tenant=tenant, table=table, window=load_window(day, days))
    return op.execute({"run_id": run_id or f"test-{uuid.uuid4().hex[:8]}"})


def load_day(sandbox, day: dt.date, days: int = 1) -> None:
    for name, spec in a8.TABLES.items():
        for tenant in sandbox.manifest["a8"]["bots"] if spec.tenant_column else [None]:
            load(name, day, tenant, days=days)


def test_every_table_lands_the_days_rows(clean_warehouse):
    sandbox = clean_warehouse
    day = sandbox.days[1]
    start, end = day_window(day)
    load_day(sandbox, day)
    with a8_conn(sandbox) as source, sandbox.warehouse() as warehouse:
        for name, spec in a8.TABLES.items():
            expected = source.execute(f'SELECT count(*) FROM "{name}" WHERE time >= %s AND time < %s',
                                      (start, end)).fetchone()[0]
            landed = warehouse.execute(f"SELECT count(*) FROM staging.{spec.staging_table}").fetchone()[0]
            assert expected > 0 and landed == expected, name
        logged = warehouse.execute("SELECT count(*), sum(rows_rejected) FROM audit.load_log").fetchone()
    with_bot = sum(1 for spec in a8.TABLES.values() if spec.tenant_column)
    assert with_bot == 7
    assert logged == (with_bot * 2 + (11 - with_bot), 0)  # each bot's tables, plus those without a bot


def test_rerun_and_overlapping_windows_leave_staging_unchanged(clean_warehouse):
    sandbox = clean_warehouse
    load_day(sandbox, sandbox.days[0])
    load_day(sandbox, sandbox.days[1])
    before = {name: staging_checksum(sandbox, spec) for name, spec in a8.TABLES.items()}
    load_day(sandbox, sandbox.days[1])
    load_day(sandbox, sandbox.days[0], days=2)
    assert {name: staging_checksum(sandbox, spec) for name, spec in a8.TABLES.items()} == before


def test_a_rerun_of_an_unchanged_day_rewrites_nothing_and_a_changed_value_reloads_it(clean_warehouse):
    """README: rerunning any day changes nothing, not even lineage columns.  A8's rows of the window
    are digested on both sides exactly (a microsecond or a JSON key counts), so an unchanged day is
    neither read nor rewritten, and any change loads the window."""
    sandbox = clean_warehouse
    day, bot = sandbox.days[1], sandbox.manifest["a8"]["bots"][0]
    first = {name: load(name, day, bot if spec.tenant_column else None) for name, spec in a8.TABLES.items()}
    lineage = "SELECT md5(string_agg(_run_id || _loaded_at::text, '|' ORDER BY _run_id, _loaded_at)) FROM staging.{}"
    with sandbox.warehouse() as conn:
        before = {name: conn.execute(lineage.format(spec.staging_table)).fetchone()[0]
                  for name, spec in a8.TABLES.items()}
    again = {name: load(name, day, bot if spec.tenant_column else None) for name, spec in a8.TABLES.items()}
    for name, summary in again.items():
        assert summary["road"] == "identical" and summary["rows_unchanged"] == first[name]["rows_landed"] > 0, name
        assert summary["rows_landed"] == summary["rows_deleted"] == 0, name
    with sandbox.warehouse() as conn:
        assert {name: conn.execute(lineage.format(spec.staging_table)).fetchone()[0]
                for name, spec in a8.TABLES.items()} == before
    start, end = day_window(day)
    with a8_conn(sandbox) as source:  # one value changes by a microsecond at the vendor
        moved = source.execute(
            "UPDATE chat_state SET time = time + interval '1 microsecond' WHERE ctid = (SELECT ctid FROM chat_state "
            "WHERE time >= %s AND time < %s AND bot_handle = %s LIMIT 1) RETURNING ctid::text",
            (start, end - dt.timedelta(seconds=1), bot)).fetchone()[0]
    try:
        changed = load("chat_state", day, bot)
        assert changed["road"] != "identical" and changed["rows_landed"] == first["chat_state"]["rows_landed"]
    finally:
        with a8_conn(sandbox) as source:
            source.execute("UPDATE chat_state SET time = time - interval '1 microsecond' WHERE ctid = %s::tid",
                           (moved,))


#: Two different values of each column type the A8 specs use, as SQL literals.
DIFFERENT_VALUES = {
    "text": ("'a'", "'b'"), "timestamptz": ("'2026-01-01 10:00:00+00'", "'2026-01-01 10:00:00.000001+00'"),
    "double precision": ("1.5", "1.25"), "jsonb": ("'{\"text\": \"hi\", \"n\": 1}'", "'{\"text\": \"hi\", \"n\": 2}'"),
    "numeric(9,6)": ("1.000001", "1.000002"), "integer": ("1", "2"), "boolean": ("true", "false"),
}


def test_the_exact_digest_tells_any_one_changed_value_of_every_a8_column_apart(sandbox):
    """A rerun is skipped only when the digests are equal, so a digest blind to a column, to a NULL,
    to which column holds a value or to a repeated row would leave a vendor's change unloaded.  Each
    A8 table's row is changed one way at a time; every change must move the digest, and an
    unchanged copy must not."""
    from psycopg import sql

    from chat_ingest.landing.digest import digest_sql

    assert {c.pg_type for spec in a8.TABLES.values() for c in spec.columns} <= set(DIFFERENT_VALUES)
    with sandbox.warehouse() as conn:
        for spec in a8.TABLES.values():
            names = sql.SQL(", ").join(map(sql.Identifier, spec.column_names))

            def digest(*rows: list[str], spec=spec, names=names) -> tuple:
                conn.execute("DROP TABLE IF EXISTS digested")
                conn.execute(sql.SQL("CREATE TEMP TABLE digested ({})").format(sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type)) for c in spec.columns)))
                for row in rows:
                    conn.execute(sql.SQL("INSERT INTO digested ({}) VALUES ({})").format(
                        names, sql.SQL(", ").join(map(sql.SQL, row))))
                return conn.execute(digest_sql(spec, sql.Identifier("digested"), sql.SQL("true"), exact=True)
                                    ).fetchone()

            base = [DIFFERENT_VALUES[c.pg_type][0] for c in spec.columns]
            assert digest(base) == digest(list(base)), spec.name
            changed = {"the row twice": digest(base, base)}
            for i, col in enumerate(spec.columns):
                changed[f"{col.name} changed"] = digest([*base[:i], DIFFERENT_VALUES[col.pg_type][1], *base[i + 1:]])
                changed[f"{col.name} NULL"] = digest([*base[:i], "NULL", *base[i + 1:]])
            texts = [i for i, c in enumerate(spec.columns) if c.pg_type == "text"]
            swapped = list(base)
            swapped[texts[0]], swapped[texts[1]] = "'x'", "'y'"
            changed["two text values"] = digest(swapped)
            swapped[texts[0]], swapped[texts[1]] = "'y'", "'x'"
            changed["the same two values swapped"] = digest(swapped)
            assert len({digest(base), *changed.values()}) == len(changed) + 1, (spec.name, changed)


def test_a_scheduled_run_lands_an_activity_the_vendor_wrote_late_into_the_day_before(clean_warehouse):
    """A8 has no ids: a day is replaced whole when it changed.  An activity written into day X after
    X's run lands with the next scheduled run, which rechecks X; a manual run of a day does not."""
    from chat_ingest.windows import resolve_window

    sandbox = clean_warehouse
    day, next_day = sandbox.days[0], sandbox.days[1]

    def run(d: dt.date, run_type: str) -> dict:
        window = resolve_window({}, *day_window(d), run_type=run_type, recheck_days=1)
        return A8ToStagingOperator(task_id="load_agent_activities", tenant=None, table="agent_activities",
                                   window=window).execute({"run_id": f"test-{uuid.uuid4().hex[:8]}"})

    first = run(day, "scheduled")
    late = dt.datetime.combine(day, dt.time(23, 59), dt.timezone.utc)
    with a8_conn(sandbox) as source:
        source.execute("INSERT INTO agent_activities (time, agent_id, session_id, event_name) "
                       "VALUES (%s, 'late-agent', 'late-session', 'loggedIn')", (late,))
    try:
        assert "rechecked" not in run(next_day, "manual")
        summary = run(next_day, "scheduled")
    finally:
        with a8_conn(sandbox) as source:
            source.execute("DELETE FROM agent_activities WHERE agent_id = 'late-agent'")
    [again] = summary["rechecked"]
    assert again["window_start"][:10] == day.isoformat()
    assert (again["rows_deleted"], again["rows_landed"]) == (first["rows_landed"], first["rows_landed"] + 1)
    with sandbox.warehouse() as conn:
        assert conn.execute("SELECT time FROM staging.a8_agent_activities WHERE agent_id = 'late-agent'"
                            ).fetchall() == [(late,)]


def test_a_row_at_midnight_lands_once_in_the_day_it_starts(clean_warehouse):
    sandbox = clean_warehouse
    day = sandbox.days[0]
    midnight = day_window(day)[1]
    bot = sandbox.manifest["a8"]["bots"][0]
    with a8_conn(sandbox) as source:
        source.execute("INSERT INTO messages (time, chat_id, mid, msg_type, bot_handle, msg_from, msg) "
                       "VALUES (%s, 'edge-chat', 'edge-mid', 'text', %s, 'user', %s)",
                       (midnight, bot, json.dumps({"text": "at midnight", "nested": {"n": [1, 2.5, None]}})))
    try:
        load("messages", day, bot)
        load("messages", day + dt.timedelta(days=1), bot)
        load("messages", day, bot, days=2)
        with sandbox.warehouse() as conn:
            rows = conn.execute("SELECT time, msg FROM staging.a8_messages WHERE mid = 'edge-mid'").fetchall()
        assert rows == [(midnight, {"text": "at midnight", "nested": {"n": [1, 2.5, None]}})]  # JSON round-trips
    finally:
        with a8_conn(sandbox) as source:
            source.execute("DELETE FROM messages WHERE mid = 'edge-mid'")


def test_an_unknown_msg_from_fails_the_gate_naming_it(clean_warehouse):
    sandbox = clean_warehouse
    day = sandbox.days[2]
    at = day_window(day)[0] + dt.timedelta(hours=9)
    bot = sandbox.manifest["a8"]["bots"][0]
    with a8_conn(sandbox) as source:
        source.execute("INSERT INTO messages (time, chat_id, mid, msg_type, bot_handle, msg_from, msg) "
                       "VALUES (%s, 'c-x', 'm-x', 'text', %s, 'system', '{}')", (at, bot))
    try:
        load("messages", day, bot, run_id="a8-gate")
        start, end = day_window(day)
        with connect() as conn, pytest.raises(ValidationFailed) as failure:
            run_gate(conn, sandbox.warehouse_dsn.replace("postgresql://", "postgresql+psycopg2://"), a8.MESSAGES,
                     run_id="a8-gate", start=start, end=end, tenants=[bot])
        assert "msg_from" in str(failure.value) and "'system' ×1" in str(failure.value)
    finally:
        with a8_conn(sandbox) as source:
            source.execute("DELETE FROM messages WHERE mid = 'm-x'")


def test_msg_types_as_the_seed_spells_them_and_ones_it_never_named_pass_the_gate_with_a_warning(clean_warehouse):
    """The seed gives ``msg_type`` as examples ("a text/HyperLink/Attachments"), in a spelling the
    generator never wrote: the seed's own spellings pass, a type nobody listed lands and is a warning
    naming it and its count (in the results, as the validate task logs it), not a failed gate."""
    sandbox = clean_warehouse
    day = sandbox.days[2]
    at = day_window(day)[0] + dt.timedelta(hours=9)
    bot = sandbox.manifest["a8"]["bots"][0]
    odd = [("m-hyper", "HyperLink"), ("m-attach", "Attachments"), ("m-carousel", "carousel")]
    with a8_conn(sandbox) as source:
        for mid, msg_type in odd:
            source.execute("INSERT INTO messages (time, chat_id, mid, msg_type, bot_handle, msg_from, msg) "
                           "VALUES (%s, 'c-x', %s, %s, %s, 'user', '{}')", (at, mid, msg_type, bot))
    try:
        assert load("messages", day, bot, run_id="a8-types")["rows_rejected"] == 0
        start, end = day_window(day)
        with connect() as conn:
            result = run_gate(conn, sandbox.warehouse_dsn.replace("postgresql://", "postgresql+psycopg2://"),
                              a8.MESSAGES, run_id="a8-types", start=start, end=end, tenants=[bot])
            recorded = conn.execute("SELECT severity, unexpected_values FROM audit.validation_results "
                                    "WHERE run_id = 'a8-types' AND column_name = 'msg_type' AND NOT success").fetchall()
        warned = [o for o in result.outcomes if not o.success]
        assert [(o.column, o.severity, o.unexpected_values) for o in warned] == [
            ("msg_type", "warning", [{"value": "carousel", "count": 1}])]
        assert recorded == [("warning", [{"value": "carousel", "count": 1}])]
    finally:
        with a8_conn(sandbox) as source:
            source.execute("DELETE FROM messages WHERE mid = ANY(%s)", ([mid for mid, _ in odd],))


def test_an_unparseable_value_is_quarantined(clean_warehouse):
    """The vendor changes a column's type (coordinates become text): bad values are refused with a reason."""
    sandbox = clean_warehouse
    day = sandbox.days[0]
    bot = sandbox.manifest["a8"]["bots"][0]
    at = day_window(day)[0] + dt.timedelta(hours=3)
    with a8_conn(sandbox) as source:
        source.execute('ALTER TABLE "user" ALTER COLUMN latitude TYPE text')
        source.execute('INSERT INTO "user" (time, client_id, bot_handle, latitude, screen_size_width) '
                       "VALUES (%s, 'cl-bad', %s, 'north', 390)", (at, bot))
    try:
        summary = load("user", day, bot, run_id="a8-quarantine")
        assert summary["rows_rejected"] == 1 and summary["rows_landed"] > 0
        with sandbox.warehouse() as conn:
            rejected = conn.execute("SELECT payload->>'client_id', reason FROM audit.rejected_records "
                                    "WHERE run_id = 'a8-quarantine'").fetchall()
            assert conn.execute("SELECT count(*) FROM staging.a8_user WHERE client_id = 'cl-bad'").fetchone() == (0,)
        assert rejected == [("cl-bad", "latitude: 'north' is not a valid numeric(9,6)")]
    finally:
        with a8_conn(sandbox) as source:
            source.execute("DELETE FROM \"user\" WHERE client_id = 'cl-bad'")
            source.execute('ALTER TABLE "user" ALTER COLUMN latitude TYPE numeric(9,6) USING latitude::numeric')


def test_the_a8_side_is_only_read(clean_warehouse):
    with a8_conn(clean_warehouse) as source:
        before = source.execute("SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables").fetchone()
    load_day(clean_warehouse, clean_warehouse.days[0])
    with a8_conn(clean_warehouse) as source:
        after = source.execute("SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables").fetchone()
    assert after == before


def test_dag_run_lands_validates_and_emits_every_tables_asset(clean_warehouse, airflow, tmp_path):
    sandbox = clean_warehouse
    run_id = airflow.trigger_day("a8_ingest", sandbox.days[1], tmp_path / "airflow.log")
    with psycopg.connect(airflow.metadata_dsn) as conn:
        states = {s for (s,) in conn.execute("SELECT state FROM task_instance WHERE run_id = %s", (run_id,))}
        assets = {r[0] for r in conn.execute(
            "SELECT a.name FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE e.source_run_id = %s",
            (run_id,))}
    assert states == {"success"}
    assert assets == {f"staging.a8_{name}" for name in a8.TABLES}
    with sandbox.warehouse() as conn:
        bots = {r[0] for r in conn.execute("SELECT DISTINCT bot_handle FROM staging.a8_chat_state")}
        failed = conn.execute("SELECT count(*) FROM audit.validation_results WHERE run_id = %s AND NOT success",
                              (run_id,)).fetchone()[0]
    assert bots == set(sandbox.manifest["a8"]["bots"]) and failed == 0


def test_only_the_loader_reads_personal_data_in_staging(clean_warehouse):
    from urllib.parse import urlsplit, urlunsplit

    sandbox = clean_warehouse
    load("agent_sessions", sandbox.days[0], None)
    password = uuid.uuid4().hex
    with sandbox.warehouse() as admin:
        admin.execute("DROP ROLE IF EXISTS bi_reader_test")
        admin.execute(f"CREATE ROLE bi_reader_test LOGIN PASSWORD '{password}'")
        admin.execute("GRANT USAGE ON SCHEMA staging TO PUBLIC")  # a careless grant: re-applying the DDL revokes it
    try:
        load("agent_sessions", sandbox.days[0], None)
        parts = urlsplit(sandbox.warehouse_dsn)
        reader = urlunsplit(parts._replace(netloc=f"bi_reader_test:{password}@{parts.hostname}:{parts.port}"))
        with psycopg.connect(reader) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT email, ip_address FROM staging.a8_agent_sessions").fetchall()
        with sandbox.warehouse() as admin:  # the loader (owner) still reads it
            assert admin.execute("SELECT count(email) FROM staging.a8_agent_sessions").fetchone()[0] > 0
    finally:
        with sandbox.warehouse() as admin:
            admin.execute("DROP ROLE bi_reader_test")
