"""The reporting layer: KPIs recomputed in plain Python from the generated raw files, compared with SQL.

Every source is landed through its real operator (stand-ins over real HTTP / S3 /
Postgres), the reporting build runs its real SQL, and each KPI is computed again
here, independently, from the dataset files the generator wrote.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import statistics
import uuid
from collections import defaultdict

import psycopg
import pytest

from tests.support.reporting import UTC, build, kpis, land_everything, ts, ultimate_records, window
from tests.support.sandbox import jsonl

pytestmark = pytest.mark.integration

EXCLUDED = ("Greeting", "Talk to a human/agent")


def rates(outcomes: list[str], understood: tuple[int, int] | None = None) -> tuple:
    n = len(outcomes)
    share = lambda *wanted: sum(o in wanted for o in outcomes) / n  # noqa: E731
    return (n, share("bot_handled"), share("escalated"), share("failed_escalation"),
            1 - share("escalated"), None, None,
            None if not understood or not understood[0] else (understood[0] - understood[1]) / understood[0])


# -- the reference computations, one per source ----------------------------------------------------


def expected_botslovers(sandbox) -> dict:
    out = {}
    for company in sandbox.manifest["botslovers"]["companies"]:
        folder = sandbox.dataset / "botslovers" / company
        messages = {m["id"]: m for m in jsonl(folder / "messages.jsonl")}
        newest = {}
        for row in jsonl(folder / "chat_agent_log.jsonl"):
            if row["id"] not in newest or row["updated_at"] >= newest[row["id"]]["updated_at"]:
                newest[row["id"]] = row
        events = defaultdict(set)
        for row in newest.values():
            if row["deleted_at"] is None:
                events[row["chat_id"]].add(row["event"])
        sessions = defaultdict(list)
        for m in messages.values():
            sessions[m["session"]].append(m)
        by_day = defaultdict(list)
        for session, msgs in sessions.items():
            human = any(m["sender_type"] == "human" for m in msgs) or "agent_joined" in events[session]
            handoff = events[session] & {"chat_escalated", "assigned_to_human", "transferred"}
            outcome = "escalated" if human else "failed_escalation" if handoff else "bot_handled"
            by_day[min(ts(m["created_at"]) for m in msgs).date()].append(outcome)
        out.update({(d, "botslovers", company): rates(o) for d, o in by_day.items()})
    return out


def expected_a8(sandbox) -> dict:
    folder = sandbox.dataset / "a8"
    chats = defaultdict(list)
    for m in jsonl(folder / "messages.jsonl"):
        chats[(m["bot_handle"], m["chat_id"])].append(m)
    states = defaultdict(set)
    for s in jsonl(folder / "chat_state.jsonl"):
        states[s["chat_id"]].add(s["state"])
    not_handled = defaultdict(int)
    for d in jsonl(folder / "user_message_details.jsonl"):
        not_handled[d["chat_id"]] += d["is_handeled"] is False  # NULL is unknown, not "not handled"
    by_key = defaultdict(lambda: ([], [0, 0]))
    for (bot, chat), msgs in chats.items():
        agent = any(m["msg_from"] == "agent" for m in msgs) or "agentAssigned" in states[chat]
        outcome = "escalated" if agent else "failed_escalation" if "TransferChat" in states[chat] else "bot_handled"
        outcomes, understood = by_key[(min(ts(m["time"]) for m in msgs).date(), "a8", bot)]
        outcomes.append(outcome)
        understood[0] += sum(m["msg_from"] == "user" for m in msgs)
        understood[1] += not_handled[chat]
    return {key: rates(o, tuple(u)) for key, (o, u) in by_key.items()}


def expected_ultimate(sandbox) -> dict:
    """The seed's own metric query, in Python: count(distinct …) over status and resolution."""
    groups = defaultdict(list)
    for r in ultimate_records(sandbox):
        if int(r["bot_messages_count"]) == 0:  # suggestion-engine conversations are left out
            continue
        groups[(ts(r["conversation_start_time"]).date(), "ultimate", r["bot_id"])].append(r)
    out = {}
    for key, rs in groups.items():
        ids = lambda cond, rs=rs: len({r["conversation_id"] for r in rs if cond(r)})  # noqa: E731
        n = ids(lambda r: True)
        visitors = sum(int(r["visitor_messages_count"]) for r in rs)
        not_understood = sum(int(r["not_understood_messages_count"]) for r in rs)
        out[key] = (n, ids(lambda r: r["conversation_status"] == "botHandled") / n,
                    ids(lambda r: r["conversation_status"] in ("email", "agent", "customEscalation")) / n,
                    ids(lambda r: r["conversation_status"] == "failedEscalation") / n,
                    ids(lambda r: r["conversation_status"] not in ("email", "agent", "customEscalation")) / n,
                    ids(lambda r: r["last_resolution"] in ("informed", "resolved")) / n,
                    ids(lambda r: r["last_resolution"] == "informed") / n,
                    (visitors - not_understood) / visitors if visitors else None)
    return out


def expected_unless(sandbox) -> dict:
    by_key = defaultdict(list)
    root = sandbox.dataset / "unless"
    for path in root.rglob("*.json"):
        doc = json.loads(path.read_text())
        logs = doc["chatHistory"]
        started = ts(doc["createdAt"]) if "createdAt" in doc else min(ts(x["timestamp"]) for x in logs)
        agent = any(x["sender"] == "support" and x["type"] != "error" for x in logs)
        attempted = any(x.get("isLiveChat") or x["type"] == "error" for x in logs)
        outcome = "escalated" if agent else "failed_escalation" if attempted else "bot_handled"
        by_key[(started.date(), "unless", doc["websiteId"])].append(outcome)
    return {key: rates(o) for key, o in by_key.items()}


def expected_intents(sandbox) -> dict:
    """The seed's third query for Ultimate: first meaningful intent by timestamp, per day and bot."""
    groups = defaultdict(list)
    for r in ultimate_records(sandbox):
        if int(r["bot_messages_count"]) == 0:
            continue
        meaningful = sorted((ts(i["intent_timestamp"]), n, i["intent_name"])
                            for n, i in enumerate(r["triggered_intent_replies"])
                            if i["not_meaningful"] is False and i["intent_name"] not in EXCLUDED)
        if meaningful:
            groups[(ts(r["conversation_start_time"]).date(), r["bot_id"], meaningful[0][2])].append(
                r["conversation_status"] == "botHandled")
    return {key: (len(v), sum(v) / len(v)) for key, v in groups.items()}


def expected_status_seconds(sandbox, company: str, day: dt.date) -> dict:
    out = defaultdict(float)
    start = dt.datetime.combine(day, dt.time(), UTC)
    end = start + dt.timedelta(days=1)
    for row in jsonl(sandbox.dataset / "botslovers" / company / "agent_status_logs.jsonl"):
        if row["duration_seconds"] is None:
            continue
        closed = ts(row["status_changed_at"])
        began = closed - dt.timedelta(seconds=row["duration_seconds"])
        overlap = (min(closed, end) - max(began, start)).total_seconds()
        if overlap > 0:
            out[(row["agent_id"], row["old_status"])] += overlap
    return dict(out)


def newest_agent_log(sandbox, company: str) -> list[dict]:
    """The newest version of every chat_agent_log row, deleted ones left out."""
    newest = {}
    for row in jsonl(sandbox.dataset / "botslovers" / company / "chat_agent_log.jsonl"):
        if row["id"] not in newest or row["updated_at"] >= newest[row["id"]]["updated_at"]:
            newest[row["id"]] = row
    return [row for row in newest.values() if row["deleted_at"] is None]


def expected_botslovers_agents(rows: list[dict], day: dt.date, loaded_until: dt.datetime) -> dict[str, tuple]:
    """agent → (chats joined that day, handle seconds inside that day, CSAT of the day's participations):
    every participation, closed or open (until the end of the loaded windows), gives each UTC day the
    part of it inside that day."""
    start = dt.datetime.combine(day, dt.time(), UTC)
    end = start + dt.timedelta(days=1)
    joined, handled, ratings = defaultdict(int), defaultdict(float), defaultdict(list)
    for row in rows:
        if row["event"] != "agent_joined":
            continue
        began = ts(row["joined_at"])
        ended = ts(row["left_at"]) if row["left_at"] else max(began, loaded_until)
        inside = (min(ended, end) - max(began, start)).total_seconds()
        if inside > 0:
            handled[row["agent_id"]] += inside
        if start <= began < end:
            joined[row["agent_id"]] += 1
            if row["response_rating"] is not None:
                ratings[row["agent_id"]].append(row["response_rating"])
    return {agent: (joined[agent], handled[agent], statistics.mean(ratings[agent]) if ratings[agent] else None)
            for agent in set(joined) | set(handled)}


def expected_first_responses(sandbox, company: str, day: dt.date) -> dict[str, list[float]]:
    folder = sandbox.dataset / "botslovers" / company
    newest = {}
    for row in jsonl(folder / "chat_agent_log.jsonl"):
        if row["id"] not in newest or row["updated_at"] >= newest[row["id"]]["updated_at"]:
            newest[row["id"]] = row
    handoffs = {}
    for row in newest.values():
        if row["deleted_at"] is None and row["event"] in ("chat_escalated", "assigned_to_human", "transferred"):
            at = ts(row["joined_at"])
            handoffs[row["chat_id"]] = min(at, handoffs.get(row["chat_id"], at))
    firsts = {}
    for m in {m["id"]: m for m in jsonl(folder / "messages.jsonl")}.values():
        at = ts(m["created_at"])
        if m["sender_type"] == "human" and m["session"] in handoffs and at >= handoffs[m["session"]]:
            if m["session"] not in firsts or (at, m["id"]) < firsts[m["session"]][:2]:
                firsts[m["session"]] = (at, m["id"], m["sender_id"], (at - handoffs[m["session"]]).total_seconds())
    out = defaultdict(list)
    for at, _, agent, seconds in firsts.values():
        if at.date() == day:
            out[agent].append(seconds)
    return out


def expected_a8_agents(sandbox, day: dt.date) -> dict:
    """(bot, agent) → (chats joined, handle seconds, first-response median, p90, resolved, timeouts)."""
    folder = sandbox.dataset / "a8"
    start = dt.datetime.combine(day, dt.time(), UTC)
    end = start + dt.timedelta(days=1)
    chats = defaultdict(list)
    for s in jsonl(folder / "chat_state.jsonl"):
        chats[(s["bot_handle"], s["chat_id"])].append((ts(s["time"]), s["id"], s["state"], s["agent_id"]))
    bot_of = {chat: bot for bot, chat in chats}
    joined, handled, resolved, timeouts, handoffs = (defaultdict(int), defaultdict(float), defaultdict(int),
                                                     defaultdict(int), {})
    loaded_until, agents = ts(window(sandbox)["end"]), set()  # what land_everything loaded
    for (bot, chat), states in chats.items():
        states.sort()
        transfers = [at for at, _, state, _ in states if state == "TransferChat"]
        if transfers:
            handoffs[chat] = min(transfers)
        for i, (at, _, state, agent) in enumerate(states):
            # a human pick-up: agentAssigned, or assignedChat after the chat's first transfer (before it: the bot)
            pickup = state == "agentAssigned" or (state == "assignedChat" and transfers and at > min(transfers))
            if pickup and agent:
                # still open: until the end of the loaded data
                until = states[i + 1][0] if i + 1 < len(states) else max(at, loaded_until)
                inside = (min(until, end) - max(at, start)).total_seconds()
                if inside > 0:  # every participation gives each day the part of it inside that day
                    agents.add((bot, agent))
                    handled[(bot, agent)] += inside
                joined[(bot, agent)] += start <= at < end
            if start <= at < end:
                resolved[(bot, agent)] += state == "closedChat"
                timeouts[(bot, agent)] += state == "timeoutChat"
    firsts = {}
    for m in jsonl(folder / "agent_message_details.jsonl"):
        at, chat = ts(m["time"]), m["chat_id"]
        if m["agent_id"] and start <= at < end:
            agents.add((bot_of[chat], m["agent_id"]))
        if m["agent_id"] and chat in handoffs and at >= handoffs[chat]:
            if chat not in firsts or (at, m["mid"]) < firsts[chat][:2]:
                firsts[chat] = (at, m["mid"], m["agent_id"], (at - handoffs[chat]).total_seconds())
    responses = defaultdict(list)
    for chat, (at, _, agent, seconds) in firsts.items():
        if start <= at < end:
            responses[(bot_of[chat], agent)].append(seconds)
    out = {}
    for key in agents:
        seconds = responses.get(key)
        p90 = None if not seconds else (
            statistics.quantiles(seconds, n=10, method="inclusive")[-1] if len(seconds) > 1 else seconds[0])
        out[key] = (joined[key], handled[key], statistics.median(seconds) if seconds else None, p90,
                    resolved[key], timeouts[key])
    return out


def expected_a8_status_seconds(sandbox, day: dt.date) -> dict:
    """(agent, status) → seconds: each log-in / log-out starts a status lasting until the agent's next one."""
    start = dt.datetime.combine(day, dt.time(), UTC)
    end = start + dt.timedelta(days=1)
    events = defaultdict(list)
    for a in jsonl(sandbox.dataset / "a8" / "agent_activities.jsonl"):
        if a["chat_id"] is None:
            events[a["agent_id"]].append((ts(a["time"]), {"loggedIn": "online", "loggedOut": "offline"}.get(
                a["event_name"], a["event_name"])))
    out = defaultdict(float)
    for agent, rows in events.items():
        rows.sort()
        for (began, status), (ended, _) in zip(rows, rows[1:], strict=False):  # each with the next
            overlap = (min(ended, end) - max(began, start)).total_seconds()
            if overlap > 0:
                out[(agent, status)] += overlap
    return dict(out)


# -- the tests -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reported(sandbox):
    with sandbox.warehouse() as conn:
        conn.execute("DROP SCHEMA IF EXISTS staging, audit, reporting CASCADE")
    land_everything(sandbox)
    build(sandbox)
    return sandbox


@pytest.mark.parametrize("source, expected", [
    ("botslovers", expected_botslovers), ("a8", expected_a8), ("ultimate", expected_ultimate),
    ("unless", expected_unless)])
def test_daily_kpis_match_an_independent_computation(reported, source, expected):
    actual = {k: v for k, v in kpis(reported).items() if k[1] == source and k[0] in reported.days}
    wanted = {k: v for k, v in expected(reported).items() if k[0] in reported.days}
    assert set(actual) == set(wanted) and wanted
    for key, values in wanted.items():
        assert actual[key] == pytest.approx(values), key


def test_intent_metrics_follow_the_seeds_third_query(reported):
    with reported.warehouse() as conn:
        rows = conn.execute("SELECT conversation_date, tenant, first_meaningful_intent, total_conversations, "
                            "bot_handled_rate FROM reporting.intent_metrics WHERE source = 'ultimate'").fetchall()
    actual = {(d, t, i): (n, float(r)) for d, t, i, n, r in rows if d in reported.days}
    wanted = {k: v for k, v in expected_intents(reported).items() if k[0] in reported.days}
    assert set(actual) == set(wanted) and wanted
    for key, values in wanted.items():
        assert actual[key] == pytest.approx(values), key


def test_agent_status_seconds_and_first_responses(reported):
    company, day = reported.manifest["botslovers"]["companies"][0], reported.days[1]
    with reported.warehouse() as conn:
        status = {(a, s): float(sec) for a, s, sec in conn.execute(
            "SELECT agent_id, status, seconds FROM reporting.agent_status_daily WHERE tenant = %s "
            "AND status_date = %s", (company, day))}
        rows = conn.execute("SELECT agent_id, first_response_median_s, first_response_p90_s, chats_joined, "
                            "handle_seconds, csat FROM reporting.agent_daily_kpis WHERE tenant = %s "
                            "AND activity_date = %s", (company, day)).fetchall()
    number = lambda v: None if v is None else float(v)  # noqa: E731
    responses = {a: (number(m), number(p)) for a, m, p, *_ in rows}
    participations = {a: (n, float(h), number(c)) for a, _, _, n, h, c in rows if n or h}
    wanted = expected_botslovers_agents(newest_agent_log(reported, company), day, ts(window(reported)["end"]))
    assert set(participations) == set(wanted) and wanted
    for agent, values in wanted.items():
        assert participations[agent] == pytest.approx(values), agent
    assert status == pytest.approx(expected_status_seconds(reported, company, day)) and status
    firsts = expected_first_responses(reported, company, day)
    for agent, seconds in firsts.items():
        median = statistics.median(seconds)
        p90 = statistics.quantiles(seconds, n=10, method="inclusive")[-1] if len(seconds) > 1 else seconds[0]
        assert responses[agent] == pytest.approx((median, p90)), agent


def test_a8_agent_kpis_and_status_seconds(reported):
    day = reported.days[1]
    with reported.warehouse() as conn:
        kpis_rows = conn.execute(
            "SELECT tenant, agent_id, chats_joined, handle_seconds, first_response_median_s, first_response_p90_s, "
            "resolved, timeouts, manual_closed, csat FROM reporting.agent_daily_kpis "
            "WHERE source = 'a8' AND activity_date = %s", (day,)).fetchall()
        status = {(a, s): float(sec) for a, s, sec in conn.execute(
            "SELECT agent_id, status, seconds FROM reporting.agent_status_daily WHERE source = 'a8' "
            "AND status_date = %s", (day,))}
        tenants = {t for (t,) in conn.execute("SELECT DISTINCT tenant FROM reporting.agent_status_daily "
                                              "WHERE source = 'a8'")}
    number = lambda v: None if v is None else float(v)  # noqa: E731
    actual = {(bot, agent): (n, float(h), number(med), number(p90), res, tout)
              for bot, agent, n, h, med, p90, res, tout, manual, csat in kpis_rows}
    assert all(row[-2] is None and row[-1] is None for row in kpis_rows)  # A8 has no close reason or rating
    wanted = expected_a8_agents(reported, day)
    assert set(actual) == set(wanted) and any(v[2] is not None for v in wanted.values())
    for key, values in wanted.items():
        assert actual[key] == pytest.approx(values), key
    assert status == pytest.approx(expected_a8_status_seconds(reported, day)) and status
    # an agent who has not been assigned a chat yet has no bot to be reported under
    assert tenants - {"(no bot)"} == set(reported.manifest["a8"]["bots"])


def test_no_reporting_text_holds_an_email_or_phone_and_users_are_keyed(reported):
    patterns = re.compile(r"[\w.+-]+@example\.(com|org|es)|\+34 6\d\d \d{3} \d{3}|\d{8}")
    with reported.warehouse() as conn:
        texts = [t for (t,) in conn.execute("SELECT text_masked FROM reporting.messages WHERE text_masked <> ''")]
        keys = conn.execute("SELECT count(user_key), count(DISTINCT user_key), bool_and(user_key ~ '^[0-9a-f]{64}$') "
                            "FROM reporting.conversations WHERE source = 'botslovers'").fetchone()
        columns = {c for (c,) in conn.execute("SELECT column_name FROM information_schema.columns "
                                              "WHERE table_schema = 'reporting'")}
    assert texts and not [t for t in texts if patterns.search(t)]
    assert any("[email]" in t for t in texts) and any("[phone]" in t for t in texts)
    assert any("[number]" in t for t in texts)
    assert keys[0] > 0 and keys[2]
    assert not {"ip_address", "email", "name", "sender_id", "client_id"} & columns


def test_the_user_key_is_an_hmac_of_the_id_with_the_connection_key(reported):
    import hashlib
    import hmac

    company = reported.manifest["botslovers"]["companies"][0]
    with reported.warehouse() as conn:
        session, key = conn.execute("SELECT conversation_id, user_key FROM reporting.conversations "
                                    "WHERE source = 'botslovers' AND tenant = %s LIMIT 1", (company,)).fetchone()
        user = conn.execute("SELECT min(sender_id) FROM staging.botslovers_messages WHERE session = %s "
                            "AND sender_type = 'user'", (session,)).fetchone()[0]
    assert key == hmac.new(b"test-hmac-key", user.encode(), hashlib.sha256).hexdigest()


def test_a_rebuild_changes_nothing(reported):
    from chat_ingest.reporting import rebuild_day
    from chat_ingest.warehouse import connect

    def fingerprint():
        with reported.warehouse() as conn:
            return [conn.execute(f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM reporting.{t} t"
                                 ).fetchone()[0] for t in ("conversations", "messages", "daily_bot_kpis",
                                                           "intent_metrics", "agent_daily_kpis", "agent_status_daily")]

    before = fingerprint()
    with connect() as conn:
        for source in ("botslovers", "a8", "ultimate", "unless"):
            for day in reported.days:
                rebuild_day(conn, source, day, pii_key="test-hmac-key", run_id="test-again")
    assert fingerprint() == before
    assert build(reported) == []  # nothing pending: every change was consumed


def test_the_reader_sees_reporting_only_and_the_loader_cannot_drop_it(reported):
    password = uuid.uuid4().hex
    with reported.warehouse() as conn:
        for role, group in (("test_reader", "chat_ingest_reader"), ("test_loader", "chat_ingest_loader")):
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE {group}")
    base = psycopg.conninfo.conninfo_to_dict(reported.warehouse_dsn)
    as_reader = psycopg.conninfo.make_conninfo(**{**base, "user": "test_reader", "password": password})
    as_loader = psycopg.conninfo.make_conninfo(**{**base, "user": "test_loader", "password": password})
    with psycopg.connect(as_reader, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM reporting.daily_bot_kpis").fetchone()[0] > 0
        for table in ("staging.botslovers_messages", "audit.rejected_records"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT count(*) FROM {table}")
    with psycopg.connect(as_loader, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM staging.botslovers_messages").fetchone()[0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE reporting.conversations")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM reporting.daily_bot_kpis")


def test_the_reporting_dag_rebuilds_a_requested_range(reported, airflow, tmp_path):
    day = reported.days[0]
    run_id = airflow.trigger("reporting", {"start_date": day.isoformat(), "end_date": day.isoformat()},
                             tmp_path / "airflow.log")
    with reported.warehouse() as conn:
        rebuilt = {(s, d) for s, d in conn.execute("SELECT source, day FROM audit.reporting_builds WHERE run_id = %s",
                                                   (run_id,))}
    assert rebuilt == {(s, day) for s in ("botslovers", "a8", "ultimate", "unless")}


def test_the_html_report_draws_every_source(reported, tmp_path):
    """Charts for every source, and per-tenant sections whose figures match the conversations."""
    import re
    from collections import Counter

    from sandbox.report import write_report

    page = write_report(reported.warehouse_dsn, tmp_path / "report.html").read_text()
    assert page.count("<svg") == 4 and "<polyline" in page
    for source in ("botslovers", "a8", "ultimate", "unless"):
        assert f">{source}</text>" in page
    sections = dict(re.findall(r"<h3>([^<]+)</h3>(<table>.*?</table>|<p>no data</p>)", page))
    rows = {title: [re.findall(r"<td>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)[1:]]
            for title, body in sections.items()}
    with reported.warehouse() as conn:
        conversations = conn.execute("SELECT source, tenant, first_meaningful_intent FROM reporting.conversations"
                                     ).fetchall()
        agents = conn.execute("SELECT DISTINCT source, tenant, agent_id FROM reporting.agent_daily_kpis").fetchall()
        # daily_bot_kpis leaves out Ultimate conversations without bot messages (the seed's FAQ)
        outcomes = conn.execute("SELECT source, tenant, outcome FROM reporting.conversations "
                                "WHERE source <> 'ultimate' OR bot_messages > 0").fetchall()
    per_tenant = Counter((s, t) for s, t, _ in outcomes)
    assert {(r[0], r[1]): int(r[4].replace(",", "")) for r in rows["Per source and tenant, whole period"]} == per_tenant
    assert {(r[0], r[1]) for r in rows["Freshness per source and tenant"]} >= set(per_tenant)
    top = {}
    for s, t, intent in conversations:
        if intent is not None:
            top.setdefault((s, t), Counter())[intent] += 1
    shown = rows["Top first meaningful intents per source and tenant"]
    for (s, t), counts in top.items():
        first = next(r for r in shown if (r[0], r[1]) == (s, t))
        assert int(first[3].replace(",", "")) == max(counts.values())
    assert {tuple(r[:3]) for r in rows["Agent KPIs per source, tenant and agent, whole period"]} == set(agents)
    handled = Counter((s, t) for s, t, outcome in outcomes if outcome == "bot_handled")
    assert {(r[0], r[1]): r[5] for r in rows["Per source and tenant, whole period"]} == {
        key: f"{100 * handled[key] / n:,.1f}" for key, n in per_tenant.items()}  # a percentage, from counts


def test_source_freshness_names_every_tenants_latest_day(reported):
    m = reported.manifest
    tenants = {("botslovers", t) for t in m["botslovers"]["companies"]} | {("a8", t) for t in m["a8"]["bots"]} \
        | {("ultimate", t) for t in m["ultimate"]["bots"]} | {("unless", t) for t in m["unless"]["websites"]}
    with reported.warehouse() as conn:
        fresh = {(s, t): d for s, t, d in conn.execute(
            "SELECT source, tenant, latest_landed_day FROM reporting.source_freshness")}
    assert set(fresh) == tenants
    assert all(day >= reported.days[-1] for day in fresh.values())


def test_a_late_ultimate_file_changes_the_earlier_day_and_nothing_else(clean_warehouse):
    """File X+1 holds conversations that began on day X: landing it rebuilds day X, not the days before."""
    from chat_ingest.operators.ultimate import UltimateToStagingOperator

    sandbox = clean_warehouse
    day_x, day_next = sandbox.days[1], sandbox.days[2]
    land_everything(sandbox, ultimate_days=[sandbox.days[0], day_x])
    build(sandbox)
    before = kpis(sandbox)
    bot = sandbox.manifest["ultimate"]["bots"][0]
    late = dict(ultimate_records(sandbox)[0], bot_id=bot, conversation_id="late-" + uuid.uuid4().hex,
                conversation_start_time=f"{day_x}T23:58:00Z", conversation_end_time=f"{day_next}T00:03:00Z",
                conversation_status="failedEscalation", bot_messages_count="2")
    folder = sandbox.dataset / "ultimate" / bot / day_next.isoformat()
    folder.mkdir()
    (folder / "part-late.json").write_text(json.dumps([late]))
    try:
        start = dt.datetime.combine(day_next, dt.time(), UTC)
        window = {"start": start.isoformat(), "end": (start + dt.timedelta(days=1)).isoformat()}
        UltimateToStagingOperator(task_id="l", tenant=bot, window=window).execute({"run_id": "late"})
        partitions = build(sandbox)
    finally:
        (folder / "part-late.json").unlink()
        folder.rmdir()
    after = kpis(sandbox)
    assert ("ultimate", day_x) in partitions
    assert after[(day_x, "ultimate", bot)][0] > before[(day_x, "ultimate", bot)][0]
    assert after[(day_x, "ultimate", bot)][3] > before[(day_x, "ultimate", bot)][3]  # a failed escalation more
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed and changed <= {(d, "ultimate", b) for d in (day_x, day_next)
                                   for b in sandbox.manifest["ultimate"]["bots"]}


def test_the_floors_loads_note_their_days_so_its_reporting_maps_a_real_runs_rebuilds(clean_warehouse):
    """``make bench``'s floor (``bench/floor.py``) lands nothing, but each of its loads notes its
    window's days for each tenant and table, as a first load of the window does: the reporting run it
    triggers plans the partitions a real run's would, so the floor has a real run's shape."""
    from bench.floor import noop_twin
    from chat_ingest.operators.botslovers import BotsloversToStagingOperator
    from chat_ingest.operators.unless import UnlessToStagingOperator
    from chat_ingest.reporting import pending_changes
    from chat_ingest.sources import unless
    from tests.support.sandbox import load_window

    sandbox = clean_warehouse
    day = sandbox.days[0]
    companies, websites = sandbox.manifest["botslovers"]["companies"], sandbox.manifest["unless"]["websites"][:1]
    loads = noop_twin(BotsloversToStagingOperator)(task_id="load_messages", tenants=companies, table="messages",
                                                    window=load_window(day, days=2))
    assert loads.execute({"run_id": "floor"}) == {
        company: {"changed_days": [day.isoformat(), (day + dt.timedelta(days=1)).isoformat()]} for company in companies}
    noop_twin(UnlessToStagingOperator)(task_id="load", tenants=websites, window=load_window(day),
                                       bucket=sandbox.env["SANDBOX_UNLESS_BUCKET"],
                                       account=sandbox.manifest["unless"]["account"]).execute({"run_id": "floor"})
    with sandbox.warehouse() as conn:
        noted = conn.execute("SELECT source, table_name, tenant, day FROM audit.changed_days "
                             "WHERE run_id = 'floor'").fetchall()
        landed = conn.execute("SELECT count(*) FROM audit.load_log").fetchone()[0]
        _, partitions = pending_changes(conn)
    assert sorted(noted) == sorted(
        [("botslovers", "messages", company, day + dt.timedelta(days=i)) for company in companies for i in (0, 1)]
        + [("unless", table, website, day) for table in unless.TABLES for website in websites])
    assert landed == 0  # nothing was read or landed
    assert partitions == sorted({("botslovers", day + dt.timedelta(days=i)) for i in (-1, 0, 1, 2)}
                                | {("unless", day + dt.timedelta(days=i)) for i in (-1, 0, 1)})
