"""Reporting under real conditions: days loaded out of order, periods across midnight, NULLs and vendor
vocabulary the seeds allow but the generator never writes.  Every expected value is computed here, in
Python, from the rows the test wrote -- never by the project's SQL."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import uuid
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.reporting import (
    UTC,
    build,
    fingerprint,
    kpis,
    land_day,
    land_everything,
    midnight,
    ultimate_records,
)
from tests.support.sources import TEST_COMPANY, a8_conn, agent_log, ch_rows, load_botslovers, message

pytestmark = pytest.mark.integration



def test_days_loaded_backwards_report_exactly_what_days_loaded_in_order_do(clean_warehouse, caplog):
    """The outage flow: the schedule loaded the later days, a backfill brings the earlier ones after.  A
    conversation whose first message arrives late moves to its start day; no rebuild collides."""
    sandbox = clean_warehouse
    days = [*sandbox.days, sandbox.days[-1] + dt.timedelta(days=1)]
    for day in days:
        land_day(sandbox, day)
        build(sandbox)
    in_order = fingerprint(sandbox)
    with sandbox.warehouse() as conn:
        conn.execute("DROP SCHEMA IF EXISTS staging, audit, reporting CASCADE")
    with caplog.at_level(logging.INFO, logger="chat_ingest.reporting"):
        for day in reversed(days):
            land_day(sandbox, day)
            build(sandbox)
    assert fingerprint(sandbox) == in_order
    assert "were moved from" in caplog.text  # the crash of issue 19: a conversation already in a later day
    with sandbox.warehouse() as conn:
        moved = conn.execute("SELECT count(*) FROM reporting.conversations c WHERE c.conversation_date "
                             "<> (c.started_at AT TIME ZONE 'UTC')::date").fetchone()[0]
        across = conn.execute("SELECT count(*) FROM reporting.conversations WHERE (started_at AT TIME ZONE 'UTC')"
                              "::date < (ended_at AT TIME ZONE 'UTC')::date").fetchone()[0]
    assert moved == 0 and across > 0  # the dataset has conversations across midnight, each in its start day


# -- participations and statuses across midnight ---------------------------------------------------


def test_a_participation_gives_each_day_the_part_of_it_inside_that_day(clean_warehouse, testco):
    sandbox = clean_warehouse
    x = sandbox.days[0]
    at = midnight(x)
    rows = [  # (id, joined, left): 23:58-00:25, and 22:00 on X to 01:00 on X+2
        ("p-short", at + dt.timedelta(hours=23, minutes=58), at + dt.timedelta(days=1, minutes=25)),
        ("p-long", at + dt.timedelta(hours=22), at + dt.timedelta(days=2, hours=1)),
    ]
    ch_rows(sandbox, f"chat_agent_log_{TEST_COMPANY}", [
        agent_log(i, left, chat_id=i, agent_id="night-agent", joined_at=joined, left_at=left, created_at=joined)
        for i, joined, left in rows])
    ch_rows(sandbox, f"agent_status_logs_{TEST_COMPANY}", [{  # offline from X 20:00 to X+2 08:00
        "id": "s-weekend", "agent_id": "night-agent", "old_status": "offline", "new_status": "online",
        "status_changed_at": (at + dt.timedelta(days=2, hours=8)).strftime("%Y-%m-%d %H:%M:%S"),
        "duration_seconds": 36 * 3600,
        "created_at": (at + dt.timedelta(days=2, hours=8)).strftime("%Y-%m-%d %H:%M:%S")}])
    # the rows arrive with the day they were last updated: X+1 and X+2 (the later day is loaded first)
    summaries = [load_botslovers(TEST_COMPANY, table, x + dt.timedelta(days=2))
                 for table in ("chat_agent_log", "agent_status_logs")]
    load_botslovers(TEST_COMPANY, "chat_agent_log", x + dt.timedelta(days=1))
    assert set(summaries[0]["changed_days"]) == {str(x + dt.timedelta(days=n)) for n in range(3)}
    assert set(summaries[1]["changed_days"]) == {str(x + dt.timedelta(days=n)) for n in range(3)}
    build(sandbox)
    expected_handle, expected_offline = defaultdict(float), defaultdict(float)
    for _, joined, left in rows:
        for n in range(3):
            start, end = at + dt.timedelta(days=n), at + dt.timedelta(days=n + 1)
            expected_handle[x + dt.timedelta(days=n)] += max(0.0, (min(left, end) - max(joined, start)).total_seconds())
    for n in range(3):
        start, end = at + dt.timedelta(days=n), at + dt.timedelta(days=n + 1)
        began, ended = at + dt.timedelta(hours=20), at + dt.timedelta(days=2, hours=8)
        expected_offline[x + dt.timedelta(days=n)] = max(0.0, (min(ended, end) - max(began, start)).total_seconds())
    with sandbox.warehouse() as conn:
        handle = {d: float(s) for d, s in conn.execute(
            "SELECT activity_date, handle_seconds FROM reporting.agent_daily_kpis WHERE tenant = %s "
            "AND agent_id = 'night-agent'", (TEST_COMPANY,))}
        offline = {d: float(s) for d, s in conn.execute(
            "SELECT status_date, seconds FROM reporting.agent_status_daily WHERE tenant = %s "
            "AND agent_id = 'night-agent' AND status = 'offline'", (TEST_COMPANY,))}
    assert handle == expected_handle == {x: 7320.0, x + dt.timedelta(days=1): 87900.0, x + dt.timedelta(days=2): 3600.0}
    assert offline == expected_offline and offline[x + dt.timedelta(days=1)] == 86400.0


def test_an_open_participation_lasts_until_the_loaded_data_ends_not_the_clock(clean_warehouse, testco):
    """A participation without an end reaches as far as its source is loaded: the same loads give the
    same report whenever they are built (the wall clock made a day's report depend on the hour), and a
    later day's load gives that day its part though none of its rows changed."""
    sandbox = clean_warehouse
    x = sandbox.days[0]
    joined = midnight(x) + dt.timedelta(hours=22)
    ch_rows(sandbox, f"chat_agent_log_{TEST_COMPANY}", [
        agent_log("p-open", joined, chat_id="p-open", agent_id="open-agent")])

    def handle() -> dict[dt.date, float]:
        build(sandbox)
        with sandbox.warehouse() as conn:
            return {d: float(s) for d, s in conn.execute(
                "SELECT activity_date, handle_seconds FROM reporting.agent_daily_kpis WHERE tenant = %s "
                "AND agent_id = 'open-agent'", (TEST_COMPANY,))}

    load_botslovers(TEST_COMPANY, "chat_agent_log", x)
    assert handle() == {x: 7200.0}  # known until X+1 00:00, not until today
    summary = load_botslovers(TEST_COMPANY, "chat_agent_log", x + dt.timedelta(days=1))
    assert summary["rows_landed"] == 0 and not summary["changed_days"]  # the build finds what it reaches
    assert handle() == {x: 7200.0, x + dt.timedelta(days=1): 86400.0}
    load_botslovers(TEST_COMPANY, "chat_agent_log", x)  # a rerun of the earlier day reaches no further
    assert handle() == {x: 7200.0, x + dt.timedelta(days=1): 86400.0}
    # every build asks which participations are open: its partial index answers, not a scan of the history
    from chat_ingest.warehouse import REPORTING_SQL

    with sandbox.warehouse() as conn:
        conn.execute("SET enable_seqscan = off")  # the table is small here; the index must serve the query
        plan = "\n".join(line for (line,) in conn.execute(
            "EXPLAIN " + (REPORTING_SQL / "open_participations_botslovers.sql").read_text()))
    assert "botslovers_chat_agent_log_open_idx" in plan, plan


def test_an_open_participation_landed_after_later_days_reaches_them_until_a_later_row_closes_it(
        clean_warehouse, testco):
    """The outage flow with a participation left open: the schedule landed day X+3 first, the backfill
    brings X, where an agent joined at 22:00 and had not left, then X+1, where they left at 06:00.
    Every day between is reported as it would be had the days landed in order, for Botslovers (the end
    on the same row) and A8 (the end in the chat's next state)."""
    from chat_ingest.operators.a8 import A8ToStagingOperator

    sandbox = clean_warehouse
    x, bot = sandbox.days[0], sandbox.manifest["a8"]["bots"][0]
    day = [x + dt.timedelta(days=n) for n in range(4)]
    joined, left = midnight(x) + dt.timedelta(hours=22), midnight(day[1]) + dt.timedelta(hours=6)

    def land(n: int) -> None:
        load_botslovers(TEST_COMPANY, "chat_agent_log", day[n])
        window = {"start": midnight(day[n]).isoformat(), "end": midnight(day[n] + dt.timedelta(days=1)).isoformat()}
        A8ToStagingOperator(task_id="l", tenant=bot, table="chat_state", window=window).execute({"run_id": f"d{n}"})
        build(sandbox)

    def handle() -> dict[str, dict[dt.date, float]]:
        with sandbox.warehouse() as conn:
            rows = conn.execute("SELECT source, activity_date, handle_seconds FROM reporting.agent_daily_kpis "
                                "WHERE agent_id = 'open-agent'").fetchall()
        return {source: {d: float(s) for src, d, s in rows if src == source} for source in ("botslovers", "a8")}

    states = [("newChat", joined - dt.timedelta(minutes=5), None),
              ("TransferChat", joined - dt.timedelta(minutes=1), "bot-1"),
              ("assignedChat", joined, "open-agent")]
    with a8_conn(sandbox) as source:
        for n, (state, at, agent) in enumerate(states):
            source.execute("INSERT INTO chat_state (time, chat_id, agent_id, state, bot_handle, id) "
                           "VALUES (%s, 'p-open', %s, %s, %s, %s)", (at, agent, state, bot, f"p-open-{n}"))
    ch_rows(sandbox, f"chat_agent_log_{TEST_COMPANY}", [
        agent_log("p-open", joined, chat_id="p-open", agent_id="open-agent")])
    try:
        land(3)
        land(0)
        opened = {x: 7200.0, day[1]: 86400.0, day[2]: 86400.0, day[3]: 86400.0}
        assert handle() == {"botslovers": opened, "a8": opened}
        with a8_conn(sandbox) as source:
            source.execute("INSERT INTO chat_state (time, chat_id, agent_id, state, bot_handle, id) "
                           "VALUES (%s, 'p-open', 'open-agent', 'closedChat', %s, 'p-open-3')", (left, bot))
        ch_rows(sandbox, f"chat_agent_log_{TEST_COMPANY}", [
            agent_log("p-open", left, chat_id="p-open", agent_id="open-agent", joined_at=joined, left_at=left,
                      created_at=joined)])
        land(1)
        closed = {x: 7200.0, day[1]: 21600.0}
        assert handle() == {"botslovers": closed, "a8": closed}
    finally:
        with a8_conn(sandbox) as source:
            source.execute("DELETE FROM chat_state WHERE chat_id = 'p-open'")


# -- Ultimate: the seed's SQL, with its NULL semantics, on any spelling the seed allows -------------------

SEED_ESCALATED = ("email", "agent", "customescalation")


def key(value):
    return None if value is None else "".join(ch for ch in value.lower() if ch.isalnum())


def seed_metrics(records: list[dict]) -> tuple:
    """The seed's "Popular Metrics" query over one day of one bot, in Python with SQL's NULL rules: a
    comparison with NULL is not true, sum() skips NULLs.  Statuses compare by their spelling-free key."""
    rs = [r for r in records if r["bot_messages_count"] is not None and int(r["bot_messages_count"]) > 0]
    ids = lambda cond: len({r["conversation_id"] for r in rs if cond(r)})  # noqa: E731
    status, resolution = (lambda r: key(r["conversation_status"])), (lambda r: key(r["last_resolution"]))
    n = ids(lambda r: True)
    visitors = [int(r["visitor_messages_count"]) for r in rs if r["visitor_messages_count"] is not None]
    not_understood = [int(r["not_understood_messages_count"]) for r in rs
                      if r["not_understood_messages_count"] is not None]
    understood = None if not visitors or not not_understood or not sum(visitors) else \
        (sum(visitors) - sum(not_understood)) / sum(visitors)
    return (n, ids(lambda r: status(r) == "bothandled") / n, ids(lambda r: status(r) in SEED_ESCALATED) / n,
            ids(lambda r: status(r) == "failedescalation") / n,
            ids(lambda r: status(r) is not None and status(r) not in SEED_ESCALATED) / n,
            ids(lambda r: resolution(r) in ("informed", "resolved")) / n,
            ids(lambda r: resolution(r) == "informed") / n,
            understood)


@contextlib.contextmanager
def ultimate_part(sandbox, bot: str, day: dt.date, records: list[dict]):
    """An extra part file in the stand-in's export of (bot, day), removed afterwards."""
    folder = sandbox.dataset / "ultimate" / bot / day.isoformat()
    folder.mkdir(exist_ok=True)
    part = folder / f"part-{uuid.uuid4().hex[:6]}.json"
    part.write_text(json.dumps(records))
    try:
        yield
    finally:
        part.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()


def test_ultimate_kpis_are_the_seeds_sql_with_nulls_and_spelling_variants(clean_warehouse, caplog):
    from chat_ingest.operators.ultimate import UltimateToStagingOperator
    from chat_ingest.sources import ultimate
    from chat_ingest.validation import run_gate
    from chat_ingest.warehouse import connect

    sandbox = clean_warehouse
    bot, day = sandbox.manifest["ultimate"]["bots"][0], sandbox.days[1]
    base = next(r for r in ultimate_records(sandbox) if r["bot_id"] == bot)
    start = f"{day}T10:00:00Z"
    odd = [dict(base, conversation_id=f"odd-{i}", conversation_start_time=start,
                conversation_end_time=f"{day}T10:05:00Z",
                conversation_status=status, last_resolution=resolution, visitor_messages_count=visitors,
                not_understood_messages_count=not_understood, bot_messages_count="2")
           for i, (status, resolution, visitors, not_understood) in enumerate([
               (None, None, "4", "1"),                     # no status: in the total, not deflected
               ("bot_handled", "Resolved", "3", None),     # the seed's other spelling; not-understood unknown
               ("BOT_HANDLED", "informed", None, "2"),
               ("Custom_Escalation", "escalated", "5", "5"),
               ("failed_escalation", "undefined", "2", "0"),
               ("handedToPartner", "informed", "1", "1"),  # a status nobody mapped: unknown, still deflected
           ])]
    with ultimate_part(sandbox, bot, day, odd):
        window = {"start": midnight(day).isoformat(), "end": midnight(day + dt.timedelta(days=1)).isoformat()}
        UltimateToStagingOperator(task_id="l", tenant=bot, window=window).execute({"run_id": "ult-odd"})
        with connect() as conn, caplog.at_level(logging.WARNING, logger="chat_ingest.validation"):
            outcomes = run_gate(conn, sandbox.warehouse_dsn.replace("postgresql://", "postgresql+psycopg2://"),
                                ultimate.CONVERSATIONS, run_id="ult-odd", start=midnight(day),
                                end=midnight(day + dt.timedelta(days=1)), tenants=[bot]).outcomes
    warned = [o for o in outcomes if not o.success]
    assert [(o.column, o.severity, o.unexpected_values) for o in warned] == [
        ("conversation_status", "warning", [{"value": "handedToPartner", "count": 1}])]
    assert "'handedToPartner' in 1 row(s)" in caplog.text
    with sandbox.warehouse() as conn:
        audited = conn.execute("SELECT column_name, value, row_count FROM audit.unmapped_values "
                               "WHERE run_id = 'ult-odd'").fetchall()
    assert audited == [("conversation_status", "handedToPartner", 1)]
    build(sandbox)
    records = [r for r in ultimate_records(sandbox) if r["bot_id"] == bot] + odd
    on_day = [r for r in records if r["conversation_start_time"].startswith(day.isoformat())]
    assert kpis(sandbox)[(day, "ultimate", bot)] == pytest.approx(seed_metrics(on_day))
    with sandbox.warehouse() as conn:
        outcomes_of = dict(conn.execute("SELECT conversation_id, outcome FROM reporting.conversations "
                                        "WHERE conversation_id LIKE 'odd-%'").fetchall())
    assert outcomes_of == {"odd-0": "unknown", "odd-1": "bot_handled", "odd-2": "bot_handled", "odd-3": "escalated",
                           "odd-4": "failed_escalation", "odd-5": "unknown"}


# -- A8: the seed's own state names, NULL handling, unmapped states -------------------------------------


def test_a8_seed_state_names_pass_the_gate_and_yield_the_expected_outcomes(clean_warehouse, caplog):
    from chat_ingest.sources import a8
    from chat_ingest.validation import run_gate
    from chat_ingest.warehouse import connect

    sandbox = clean_warehouse
    bot, day = sandbox.manifest["a8"]["bots"][0], sandbox.days[1]
    t0 = midnight(day) + dt.timedelta(hours=14)
    at = lambda minutes: t0 + dt.timedelta(minutes=minutes)  # noqa: E731
    chats = {  # chat → its states, in the seed's own vocabulary (and one state nobody mapped)
        "seed-picked": [("newChat", 0, None), ("assignedChat", 0, "bot-1"), ("TransferChat", 2, "bot-1"),
                        ("assignedChat", 5, "human-7")],
        "seed-waiting": [("newChat", 0, None), ("assignedChat", 0, "bot-1"), ("TransferChat", 3, "bot-1")],
        "seed-bot": [("newChat", 0, None), ("assignedChat", 0, "bot-1")],
        "seed-parked": [("newChat", 0, None), ("parkedChat", 1, "bot-1")],
    }
    handled = {"seed-picked": [True, False, None], "seed-waiting": [False, False], "seed-bot": [True, None],
               "seed-parked": [None]}
    with a8_conn(sandbox) as source:
        for chat, states in chats.items():
            for n, (state, minute, agent) in enumerate(states):
                source.execute("INSERT INTO chat_state (time, chat_id, agent_id, state, bot_handle, id) "
                               "VALUES (%s, %s, %s, %s, %s, %s)", (at(minute), chat, agent, state, bot, f"{chat}-{n}"))
            for n, is_handled in enumerate(handled[chat]):
                mid = f"{chat}-u{n}"
                source.execute("INSERT INTO messages (time, chat_id, mid, msg_type, bot_handle, msg_from, msg) "
                               "VALUES (%s, %s, %s, 'text', %s, 'user', '{\"text\": \"hi\"}')",
                               (at(n), chat, mid, bot))
                source.execute("INSERT INTO user_message_details (time, chat_id, mid, is_handeled) "
                               "VALUES (%s, %s, %s, %s)", (at(n), chat, mid, is_handled))
    try:
        land_everything(sandbox)
        with connect() as conn, caplog.at_level(logging.WARNING, logger="chat_ingest.validation"):
            outcomes = run_gate(conn, sandbox.warehouse_dsn.replace("postgresql://", "postgresql+psycopg2://"),
                                a8.CHAT_STATE, run_id="a8-seed", start=midnight(day),
                                end=midnight(day + dt.timedelta(days=1)), tenants=[bot]).outcomes
        build(sandbox)
        with sandbox.warehouse() as conn:
            got = {c: (o, n) for c, o, n in conn.execute(
                "SELECT conversation_id, outcome, not_understood_messages FROM reporting.conversations "
                "WHERE source = 'a8' AND conversation_id LIKE 'seed-%'")}
            picked = conn.execute("SELECT chats_joined, handle_seconds FROM reporting.agent_daily_kpis "
                                  "WHERE source = 'a8' AND agent_id = 'human-7' AND activity_date = %s",
                                  (day,)).fetchone()
            audited = conn.execute("SELECT value, row_count FROM audit.unmapped_values WHERE run_id = 'a8-seed'"
                                   ).fetchall()
    finally:
        with a8_conn(sandbox) as source:
            for table in ("chat_state", "messages", "user_message_details"):
                source.execute(f"DELETE FROM {table} WHERE chat_id LIKE 'seed-%%'")
    assert [(o.column, o.severity) for o in outcomes if not o.success] == [("state", "warning")]
    assert audited == [("parkedChat", 1)] and "'parkedChat' in 1 row(s)" in caplog.text
    # not understood counts is_handeled IS FALSE only: NULL is unknown, not "not handled"
    assert got == {"seed-picked": ("escalated", 1), "seed-waiting": ("failed_escalation", 2),
                   "seed-bot": ("bot_handled", 0), "seed-parked": ("unknown", 0)}
    # the human pick-up is still open: it lasts until now, cut at the day's end
    assert picked[0] == 1 and float(picked[1]) == (midnight(day + dt.timedelta(days=1)) - at(5)).total_seconds()


def test_a8_agent_status_names_the_seed_gives_by_example_count_as_the_statuses_they_mean(clean_warehouse):
    """The seed names agent activities "such as loggedIn and loggedOut" and "changing statuses from
    available to unavailable": a vendor spelling ``LoggedIn`` or ``logged_out`` logs the agent in or out,
    ``available`` is online, ``unavailable`` is logged in but not online (the generator writes only
    ``loggedIn`` / ``loggedOut``)."""
    sandbox = clean_warehouse
    day = sandbox.days[1]
    at = lambda hour: midnight(day) + dt.timedelta(hours=hour)  # noqa: E731
    activities = [("LoggedIn", 8), ("unavailable", 9), ("available", 10), ("logged_out", 11), ("loggedIn", 12)]
    with a8_conn(sandbox) as source:
        for n, (event, hour) in enumerate(activities):
            source.execute("INSERT INTO agent_activities (time, agent_id, session_id, event_name) "
                           "VALUES (%s, 'seed-agent', %s, %s)", (at(hour), f"seed-{n}", event))
    try:
        land_day(sandbox, day, ("a8",))
        build(sandbox)
        with sandbox.warehouse() as conn:
            statuses = conn.execute("SELECT status, seconds, round(online_share, 4) FROM reporting.agent_status_daily "
                                    "WHERE source = 'a8' AND agent_id = 'seed-agent' AND status_date = %s "
                                    "ORDER BY status", (day,)).fetchall()
    finally:
        with a8_conn(sandbox) as source:
            source.execute("DELETE FROM agent_activities WHERE agent_id = 'seed-agent'")
    share = round(Decimal(2) / 3, 4)  # online 2 h of the 3 h logged in; the last log-in is still open
    assert [(s, float(sec), r) for s, sec, r in statuses] == [
        ("offline", 3600.0, share), ("online", 7200.0, share), ("unavailable", 3600.0, share)]


# -- Unless: a rerun of an earlier day reads what changed since ---------------------------------------


def test_an_unless_rerun_of_an_earlier_day_lands_a_later_rewrite(clean_warehouse):
    from tests.support.sources import UNLESS_WEBSITE as WEBSITE
    from tests.support.sources import load_unless as load
    from tests.support.sources import unless_documents as documents
    from tests.support.sources import unless_objects as objects

    sandbox = clean_warehouse
    day = sandbox.days[0]
    key_, doc = next((k, d) for k, d in sorted(documents(sandbox).items())
                     if dt.datetime.fromtimestamp(d["chatHistory"][0]["timestamp"] / 1000, UTC).date() == day)
    load(sandbox, sandbox.days[-1], run_id="unless-latest")  # the schedule is at the last day
    newer = dict(doc, chatHistory=[*doc["chatHistory"], dict(doc["chatHistory"][-1], uuid=str(uuid.uuid4()),
                                                             content="a later answer")])
    with objects(sandbox, {key_: json.dumps(newer).encode()}):
        summary = load(sandbox, day, run_id="unless-rerun")  # rewritten now, long after `day`
    assert summary["conversations"]["rows_landed"] == 1
    with sandbox.warehouse() as conn:
        items = conn.execute("SELECT log_items FROM staging.unless_conversations WHERE object_key = %s",
                             (key_,)).fetchone()[0]
    assert items == len(doc["chatHistory"]) + 1 and WEBSITE in key_


def test_an_unless_error_item_spelled_otherwise_is_still_an_error_not_a_message(clean_warehouse):
    """The seed names the log type 'error' by example; a widget writing ``Error`` or ``ERROR`` logs
    the same thing: not a message, a failed hand-off when no agent wrote, a system item in
    ``reporting.messages`` (before, it counted as the user's message and the conversation as
    bot-handled)."""
    from tests.support.sources import load_unless as load
    from tests.support.sources import unless_documents as documents
    from tests.support.sources import unless_objects as objects

    sandbox = clean_warehouse
    key_, doc = sorted(documents(sandbox).items())[3]
    first = doc["chatHistory"][0]["timestamp"]
    spelled = ["message", "Error", "message", "ERROR"]
    senders = ["user", "user", "bot", "bot"]
    items = [{"type": kind, "sender": who, "uuid": str(uuid.uuid4()), "hidden": False, "content": f"item {n}",
              "timestamp": first + 1000 * n} for n, (kind, who) in enumerate(zip(spelled, senders, strict=True))]
    conversation = key_.rsplit("/", 1)[1].removesuffix(".json")
    with objects(sandbox, {key_: json.dumps(dict(doc, chatHistory=items)).encode()}):
        load(sandbox, run_id="unless-error-spelling")
    build(sandbox)
    with sandbox.warehouse() as conn:
        counted = conn.execute("SELECT user_messages, bot_messages, agent_messages, outcome "
                               "FROM reporting.conversations "
                               "WHERE source = 'unless' AND conversation_id = %s", (conversation,)).fetchone()
        roles = conn.execute("SELECT sender_role FROM reporting.messages WHERE source = 'unless' AND "
                             "conversation_id = %s ORDER BY sent_at", (conversation,)).fetchall()
    assert counted == (1, 1, 0, "failed_escalation")
    assert [r for (r,) in roles] == ["user", "system", "bot", "system"]


# -- ids as long as the loader lets through, in every key of every source ------------------------------


def test_ids_as_long_as_the_loader_accepts_build_every_reporting_key_in_every_source(clean_warehouse, testco):
    """Conversation, message, agent, participation and intent names of ``KEY_VALUE_MAX_BYTES`` each, in
    every source, land and build every reporting key they reach, where two of them meet in one index
    entry.  Each value passed its own landing check before, but a 1,400-byte session and message id
    failed the whole day's rebuild ("index row size 2840 exceeds btree version 4 maximum 2704 for index
    messages_pkey"); one byte more than the limit is quarantined with its reason."""
    import secrets

    from chat_ingest.operators.a8 import A8ToStagingOperator
    from chat_ingest.operators.ultimate import UltimateToStagingOperator
    from chat_ingest.rules import KEY_VALUE_MAX_BYTES as K
    from chat_ingest.sources import a8
    from tests.support.sources import UNLESS_WEBSITE as WEBSITE
    from tests.support.sources import load_unless
    from tests.support.sources import unless_objects as objects

    def long_(tag: str, size: int = K) -> str:  # incompressible, so no index entry is saved by compression
        return f"{tag}-{secrets.token_hex(size)}"[:size]

    sandbox = clean_warehouse
    day, m = sandbox.days[0], sandbox.manifest
    at = lambda minutes: midnight(day) + dt.timedelta(hours=10, minutes=minutes)  # noqa: E731
    one_day = {"start": midnight(day).isoformat(), "end": midnight(day + dt.timedelta(days=1)).isoformat()}
    # Botslovers: a conversation with a user and an agent message, the agent's open participation, a status
    session, user_mid, agent_mid, agent, participation, too_long = (
        long_("session"), long_("mid"), long_("agent-mid"), long_("agent"), long_("join"), long_("over", K + 1))
    ch_rows(sandbox, f"messages_{TEST_COMPANY}", [
        message(user_mid, at(0), session=session), message(too_long, at(0), session=session),
        message(agent_mid, at(2), session=session, sender_type="human", sender_id=agent, direction="outbound",
                type="outbound")])
    ch_rows(sandbox, f"chat_agent_log_{TEST_COMPANY}", [
        agent_log(participation, at(1), chat_id=session, agent_id=agent)])
    ch_rows(sandbox, f"agent_status_logs_{TEST_COMPANY}", [{
        "id": long_("status"), "agent_id": agent, "old_status": "online", "new_status": "break",
        "status_changed_at": at(60), "duration_seconds": 3600, "created_at": at(60)}])
    for table in ("messages", "chat_agent_log", "agent_status_logs"):
        load_botslovers(TEST_COMPANY, table, day, run_id=f"long-{table}")
    # A8: a chat a human picks up after a transfer, its user message and NLP intent, the agent's status
    bot, chat, a8_mid, a8_agent, pickup, intent, a8_status = (
        m["a8"]["bots"][0], long_("chat"), long_("a8-mid"), long_("a8-agent"), long_("pickup"), long_("intent"),
        long_("status"))
    states = [("newChat", 0, None, "s0"), ("assignedChat", 0, "bot-1", "s1"), ("TransferChat", 2, "bot-1", "s2"),
              ("assignedChat", 5, a8_agent, pickup)]
    ultimate_bot, ultimate_conversation, ultimate_intent = m["ultimate"]["bots"][0], long_("conv"), long_("u-intent")
    base = next(r for r in ultimate_records(sandbox) if r["bot_id"] == ultimate_bot)
    ultimate_record = dict(base, conversation_id=ultimate_conversation, bot_messages_count="2",
                           conversation_start_time=f"{day}T10:00:00Z", conversation_end_time=f"{day}T10:05:00Z",
                           triggered_intent_replies=[{"intent_name": ultimate_intent, "not_meaningful": False,
                                                      "intent_timestamp": f"{day}T10:01:00Z", "reply_id": "r-1"}])
    # Unless: ids in the object key are at most 128 characters (KEY_PATTERN); a log item's uuid and topic
    unless_session, unless_conversation, item_uuid, topic = "s" * 128, "c" * 128, long_("uuid"), long_("topic")
    unless_key = f"{m['unless']['account']}/conversations/{WEBSITE}/{unless_session}/{unless_conversation}.json"
    unless_doc = {"createdAt": int(at(0).timestamp() * 1000), "sessionId": unless_session, "websiteId": WEBSITE,
                  "chatHistory": [{"type": "message", "sender": "user", "timestamp": int(at(1).timestamp() * 1000),
                                   "uuid": item_uuid, "segmentId": topic, "content": "where is my order?"}]}
    with a8_conn(sandbox) as source:
        for state, minute, agent_id, state_id in states:
            source.execute("INSERT INTO chat_state (time, chat_id, agent_id, state, bot_handle, id) "
                           "VALUES (%s, %s, %s, %s, %s, %s)", (at(minute), chat, agent_id, state, bot, state_id))
        source.execute("INSERT INTO messages (time, chat_id, mid, msg_type, bot_handle, msg_from, msg) "
                       "VALUES (%s, %s, %s, 'text', %s, 'user', '{\"text\": \"hi\"}')", (at(1), chat, a8_mid, bot))
        source.execute("INSERT INTO user_message_details (time, chat_id, mid, is_handeled) VALUES (%s, %s, %s, true)",
                       (at(1), chat, a8_mid))
        source.execute("INSERT INTO a8bot_nlp (mid, time, intent, bot_handle) VALUES (%s, %s, %s, %s)",
                       (a8_mid, at(1), intent, bot))
        source.execute("INSERT INTO agent_activities (time, agent_id, session_id, event_name) VALUES "
                       "(%s, %s, 'console', %s), (%s, %s, 'console', 'loggedOut')",
                       (at(0), a8_agent, a8_status, at(30), a8_agent))
    try:
        for table in ("chat_state", "messages", "user_message_details", "a8bot_nlp", "agent_activities"):
            A8ToStagingOperator(task_id="l", tenant=bot if a8.TABLES[table].tenant_column else None, table=table,
                                window=one_day).execute({"run_id": f"long-{table}"})
        with ultimate_part(sandbox, ultimate_bot, day, [ultimate_record]):
            UltimateToStagingOperator(task_id="l", tenant=ultimate_bot, window=one_day).execute({"run_id": "long-u"})
        with objects(sandbox, {unless_key: json.dumps(unless_doc).encode()}):
            load_unless(sandbox, day, run_id="long-unless")
        build(sandbox)
    finally:
        with a8_conn(sandbox) as source:
            for table in ("chat_state", "messages", "user_message_details"):
                source.execute(f"DELETE FROM {table} WHERE chat_id = %s", (chat,))
            source.execute("DELETE FROM a8bot_nlp WHERE mid = %s", (a8_mid,))
            source.execute("DELETE FROM agent_activities WHERE agent_id = %s", (a8_agent,))
    with sandbox.warehouse() as conn:
        def rows(query: str) -> set[tuple]:
            return set(conn.execute(query).fetchall())

        messages = rows("SELECT source, conversation_id, message_id FROM reporting.messages")
        intents = rows("SELECT source, conversation_id, first_meaningful_intent FROM reporting.conversations")
        per_intent = rows("SELECT source, tenant, first_meaningful_intent FROM reporting.intent_metrics")
        agents = rows("SELECT source, tenant, agent_id, chats_joined FROM reporting.agent_daily_kpis")
        statuses = rows("SELECT source, agent_id, status FROM reporting.agent_status_daily")
        open_ = rows("SELECT source, participation_id FROM audit.open_participations")
        rejected = conn.execute("SELECT run_id, reason FROM audit.rejected_records "
                                "WHERE run_id LIKE 'long-%'").fetchall()
    assert {("botslovers", session, user_mid), ("botslovers", session, agent_mid), ("a8", chat, a8_mid),
            ("unless", unless_conversation, f"0:{item_uuid}")} <= messages
    assert {("a8", chat, intent), ("ultimate", ultimate_conversation, ultimate_intent),
            ("unless", unless_conversation, topic)} <= intents
    assert {("a8", bot, intent), ("ultimate", ultimate_bot, ultimate_intent), ("unless", WEBSITE, topic)} <= per_intent
    assert {("botslovers", TEST_COMPANY, agent, 1), ("a8", bot, a8_agent, 1)} <= agents
    assert {("botslovers", agent, "online"), ("a8", a8_agent, a8_status)} <= statuses
    assert {("botslovers", participation), ("a8", f"{chat} {pickup}")} <= open_
    assert rejected == [("long-messages", f"id: {K + 1} bytes, over the limit of {K}")]


def test_every_index_of_the_warehouse_fits_one_entry_by_what_its_values_may_hold(clean_warehouse):
    """Every B-tree index of staging, audit and reporting: the most its text values hold together is
    under what one index entry may (PostgreSQL refuses an entry over 2,704 bytes, and with it the whole
    load or rebuild).  A staging column is bounded by its spec (``Column.max_bytes``), a reporting or
    audit column by what fills it, named here: an index added on a column nobody bounded fails this."""
    from chat_ingest.reporting import SOURCES, ensure_reporting_schema
    from chat_ingest.rules import INDEX_ENTRY_MAX_BYTES, TENANT_MAX_BYTES
    from chat_ingest.rules import KEY_VALUE_MAX_BYTES as K
    from chat_ingest.sources import TABLES_BY_SOURCE
    from chat_ingest.warehouse import connect

    filled_by = {  # reporting and audit text columns in an index: what fills them, and so their bound
        "source": max(map(len, SOURCES)), "tenant": TENANT_MAX_BYTES,  # a spec's tenant column, or a configured one
        "conversation_id": K, "agent_id": K, "status": K, "first_meaningful_intent": K,  # keyed staging values
        "message_id": K + len(":2147483647"),  # Unless: a log item's position ':' its uuid
        "participation_id": 2 * K + 1,  # A8: a chat id ' ' its state's id
        "table_name": 63, "column_name": 63,  # names of specs' tables and columns: PostgreSQL identifiers
        "run_id": 250,  # an Airflow run id (its column is a String(250)), or a test's
        "value_key": K,  # a configured vocabulary value (vocabulary.mapping refuses a longer one)
        "scope": 2 * TENANT_MAX_BYTES + len("/conversations//"),  # an Unless prefix: account, website
        "fingerprint": 64,  # the sha256 hex of the schema's statements
    }
    specs = {spec.staging_table: spec for tables in TABLES_BY_SOURCE.values() for spec in tables.values()}
    specs |= {spec.days_table: spec for spec in specs.values() if spec.days_table}

    def bound(schema: str, table: str, column: str) -> int:
        if schema != "staging":
            return filled_by[column]
        spec = specs[table]
        if table == spec.days_table:
            return {"conversation_id": spec.column(spec.conversation_column).max_bytes,
                    "tenant": TENANT_MAX_BYTES}[column]
        return TENANT_MAX_BYTES if column == spec.tenant_column else spec.column(column).max_bytes

    with connect() as conn:
        ensure_reporting_schema(conn)
        indexes = conn.execute(
            "SELECT n.nspname, t.relname, i.relname, array_agg(a.attname ORDER BY k.n) "
            "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "JOIN pg_am am ON am.oid = i.relam AND am.amname = 'btree' "
            "JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY k (attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum AND a.atttypid = 'text'::regtype "
            "WHERE n.nspname IN ('staging', 'audit', 'reporting') GROUP BY 1, 2, 3").fetchall()
    sizes = {f"{schema}.{index}": sum(bound(schema, table, c) for c in columns)
             for schema, table, index, columns in indexes}
    assert {"reporting.messages_pkey", "audit.open_participations_pkey", "staging.unless_logs_pkey",
            "staging.a8_user_client_lookup_idx", "staging.botslovers_messages_days_pkey"} <= set(sizes)
    assert {index: size for index, size in sizes.items() if size > INDEX_ENTRY_MAX_BYTES} == {}


def test_weekly_and_monthly_kpis_re_aggregate_the_daily_counts(clean_warehouse):
    sandbox = clean_warehouse
    land_everything(sandbox)
    build(sandbox)
    with sandbox.warehouse() as conn:
        daily = conn.execute("SELECT conversation_date, source, tenant, total_conversations, "
                             "bot_handled_conversations, "
                             "deflected_conversations FROM reporting.daily_bot_kpis").fetchall()
        periods = {(p, s, src, t): (n, b, float(r)) for p, s, src, t, n, b, r in conn.execute(
            "SELECT period, period_start, source, tenant, total_conversations, bot_handled_conversations, "
            "deflection_rate FROM reporting.bot_kpis_by_period")}
    expected = defaultdict(lambda: [0, 0, 0])
    for d, source, tenant, n, bot_handled, deflected in daily:
        for period, begins in (("week", d - dt.timedelta(days=d.weekday())), ("month", d.replace(day=1))):
            acc = expected[(period, begins, source, tenant)]
            acc[0], acc[1], acc[2] = acc[0] + n, acc[1] + bot_handled, acc[2] + deflected
    assert set(periods) == set(expected) and expected
    for k, (n, bot_handled, deflected) in expected.items():
        assert periods[k] == pytest.approx((n, bot_handled, deflected / n)), k


def test_every_reporting_table_and_column_says_what_it_means(clean_warehouse):
    """BI tools show COMMENT ON text: no reporting table, view or column is left without one."""
    from chat_ingest.reporting import ensure_reporting_schema
    from chat_ingest.warehouse import connect

    with connect() as conn:
        ensure_reporting_schema(conn)
        conn.commit()
    with clean_warehouse.warehouse() as conn:
        bare = conn.execute(
            "SELECT c.relname || coalesce('.' || a.attname, '') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'reporting' "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE c.relkind IN ('r', 'v') AND col_description(c.oid, a.attnum) IS NULL").fetchall()
        tables = dict(conn.execute("SELECT c.relname, obj_description(c.oid, 'pg_class') IS NOT NULL FROM pg_class c "
                                   "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'reporting' "
                                   "AND c.relkind IN ('r', 'v')").fetchall())
    assert bare == []
    assert all(tables.values()) and {"conversations", "daily_bot_kpis", "bot_kpis_by_period"} <= set(tables)


def _distribution_postgres() -> Path | None:
    """The bin directory of a Debian PostgreSQL server that has pgcrypto, if one is installed."""
    for initdb in sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True):
        version = initdb.parents[1].name
        if Path(f"/usr/share/postgresql/{version}/extension/pgcrypto.control").exists():
            return initdb.parent
    return None


@pytest.fixture(scope="module")
def pgcrypto_warehouse(tmp_path_factory):
    """A second warehouse on Debian's PostgreSQL, which has pgcrypto (the sandbox's embedded one has not)."""
    from sandbox.debian import apt_install
    from sandbox.postgres import EmbeddedPostgres
    from sandbox.services import free_port

    if _distribution_postgres() is None:
        reason = apt_install(["postgresql"], needed=[])
        if reason or _distribution_postgres() is None:
            pytest.skip(reason or "Debian's postgresql package brought no pgcrypto")
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pgcrypto") / "pgdata", free_port(), _distribution_postgres())
    server.start()
    yield server.dsn()
    server.stop()


@pytest.mark.parametrize("server", ["embedded, no pgcrypto: sha256 pads", "pgcrypto: hmac()"])
def test_the_user_key_is_the_hmac_of_the_id_on_servers_with_and_without_pgcrypto(server, sandbox, request):
    """The same keyed HMAC-SHA256 (RFC 2104, as Python's hmac computes it), by pgcrypto where the
    server has it and from pads elsewhere: keys short and over the 64-byte block, ids in any script."""
    import hashlib
    import hmac

    import psycopg

    from chat_ingest.reporting import ensure_reporting_schema, hmac_settings

    uses_pgcrypto = server.startswith("pgcrypto")
    dsn = request.getfixturevalue("pgcrypto_warehouse") if uses_pgcrypto else sandbox.warehouse_dsn
    ids = ["user-1", "ünïcødé 用户", "x" * 500, ""]
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_reporting_schema(conn)
        definition = conn.execute("SELECT pg_get_functiondef('reporting.user_key(text)'::regprocedure)").fetchone()[0]
        assert ("hmac(" in definition) is uses_pgcrypto, definition
        for key in ("k", "a reporting key with spaces", "K" * 100):
            with conn.transaction():
                for name, value in hmac_settings(key).items():
                    conn.execute("SELECT set_config(%s, %s, true)", (name, value))
                got = [conn.execute("SELECT reporting.user_key(%s)", (value,)).fetchone()[0] for value in ids]
            assert got == [hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest() for value in ids]
        with pytest.raises(psycopg.errors.UndefinedObject):  # outside a build: no key, no hash
            conn.execute("SELECT reporting.user_key('user-1')")


def test_a_conversations_rows_days_apart_are_read_from_its_kept_days_and_an_upgrade_fills_them(
        clean_warehouse, testco):
    """Botslovers messages have no index on the session (its upkeep slowed every load): a rebuild reads a
    session's messages from the days the loader kept for it.  A session with messages three days apart,
    landed by two loads, is reported whole; a warehouse that predates the days table gets them from the
    rows staging holds."""
    from chat_ingest.warehouse import connect, ensure_schema

    sandbox = clean_warehouse
    x = sandbox.days[0]
    later = x + dt.timedelta(days=3)
    ch_rows(sandbox, f"messages_{TEST_COMPANY}", [
        message("m1", midnight(x) + dt.timedelta(hours=10), session="far"),
        message("m2", midnight(x) + dt.timedelta(hours=11), session="far", sender_type="bot"),
        message("m3", midnight(later) + dt.timedelta(hours=9), session="far", sender_type="human", sender_id="agent-1"),
        message("n1", midnight(later) + dt.timedelta(hours=9), session="near")])
    load_botslovers(TEST_COMPANY, "messages", x)
    load_botslovers(TEST_COMPANY, "messages", later)
    expected_days = [("far", x), ("far", later), ("near", later)]

    def kept_days() -> list:
        with sandbox.warehouse() as conn:
            return conn.execute("SELECT conversation_id, day FROM staging.botslovers_messages_days "
                                "WHERE tenant = %s ORDER BY 1, 2", (TEST_COMPANY,)).fetchall()

    assert kept_days() == expected_days
    # a day landed again with a new session goes through the checked road, which keeps its days too
    ch_rows(sandbox, f"messages_{TEST_COMPANY}",
            [message("l1", midnight(later) + dt.timedelta(hours=12), session="late")])
    again = load_botslovers(TEST_COMPANY, "messages", later)
    assert again["road"] == "checked" and again["rows_landed"] == 1, again
    expected_days = sorted([*expected_days, ("late", later)])
    assert kept_days() == expected_days
    with sandbox.warehouse() as conn:
        definitions = [d for (d,) in conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'staging' "
                                                  "AND tablename = 'botslovers_messages'")]
    assert definitions and not any("session" in d for d in definitions), definitions
    build(sandbox)
    with sandbox.warehouse() as conn:
        far = conn.execute(
            "SELECT conversation_date, user_messages, bot_messages, agent_messages, outcome, "
            "(SELECT count(*) FROM reporting.messages m WHERE m.tenant = c.tenant "
            "AND m.conversation_id = c.conversation_id) "
            "FROM reporting.conversations c WHERE tenant = %s AND conversation_id = 'far'", (TEST_COMPANY,)).fetchone()
    assert far == (x, 1, 1, 1, "escalated", 3)
    # an upgrade: the days table is new beside a staging table that holds rows
    with sandbox.warehouse() as conn:
        conn.execute("DROP TABLE staging.botslovers_messages_days")
        conn.execute("DELETE FROM audit.schema_applied")
    with connect() as conn:
        ensure_schema(conn)
    assert kept_days() == expected_days


def test_masking_replaces_exactly_what_its_three_patterns_match_and_is_inlined(sandbox):
    """``reporting.mask_pii`` skips a pattern on a text that cannot hold it (no '@', no digit); on any
    text it returns what the three replacements in a row return, and the planner inlines it."""
    import psycopg

    from chat_ingest.reporting import ensure_reporting_schema

    in_a_row = (r"regexp_replace(regexp_replace(regexp_replace(t, "  # '%%': a bound query
                r"'[A-Za-z0-9._%%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}', '[email]', 'g'), "
                r"'\d{6,}', '[number]', 'g'), '\+?\d(?:[\s().-]*\d){8,14}', '[phone]', 'g')")
    texts = [None, "", "What are your opening hours?", "Thanks! 😊", "mail ana.p+x@shop.example.es today",
             "user123456@example.com", "order 1234567 and call +34 600 123 456", "at 9:00 @ the shop",
             "card 4111 1111 1111 1111", "id ١٢٣٤٥٦٧", "a@b", "(600) 123-4567 or 600.123.4567", "@@12@34",
             "x" * 5000 + " 123456789"]
    with psycopg.connect(sandbox.warehouse_dsn, autocommit=True) as conn:
        ensure_reporting_schema(conn)
        rows = conn.execute(f"SELECT t, reporting.mask_pii(t), {in_a_row} FROM unnest(%s::text[]) AS u(t)",
                            (texts,)).fetchall()
        plan = "\n".join(r for (r,) in conn.execute(
            "EXPLAIN VERBOSE SELECT reporting.mask_pii(t) FROM unnest(%s::text[]) AS u(t)", (texts,)))
    assert [(text, masked) for text, masked, _ in rows] == [(text, expected) for text, _, expected in rows]
    assert sum(masked != text for text, masked, _ in rows if text) >= 6  # the cases do get masked
    assert "regexp_replace" in plan and "mask_pii" not in plan and "mask_emails" not in plan, plan
