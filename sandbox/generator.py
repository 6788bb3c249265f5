"""Deterministic synthetic data for the four vendors, written in the dataset layout.

One simulated conversation (who said what when, whether and how it escalated,
which intents fired) is rendered into each vendor's own format, so the four
sources describe behaviour of the same kind and the reporting layer's KPIs can
be recomputed independently from the files.

Dataset layout (plain files, so anyone can bring their own data)::

    manifest.json                                  tenants, dates, seed
    botslovers/<company>/messages.jsonl            one ClickHouse row per line
    botslovers/<company>/chat_agent_log.jsonl      a row updated later appears once per version
    botslovers/<company>/agent_status_logs.jsonl
    a8/<table>.jsonl                               the eleven A8 tables
    ultimate/<bot_id>/<YYYY-MM-DD>.json            conversations that ENDED that day (JSON array;
                                                   .jsonl when bad records are asked for); in the
                                                   live form (--ultimate-form live) as the v3 export
                                                   serves them: see Generator.live_record
    unless/<account>/conversations/<website>/<session>/<conversation>.json

Usage: ``python -m sandbox.generator --out DIR --seed 7 --days 3 --start 2026-11-17 [--bad-records 0.02]
[--ultimate-form live]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

UTC = dt.timezone.utc

COMPANIES = ("acme", "globex")
A8_BOTS = ("a8-retail", "a8-travel")
ULTIMATE_BOTS = ("ult-bank", "ult-telco")
UNLESS_ACCOUNT = "acct-7f3a"
UNLESS_WEBSITES = ("web-shop", "web-help")

OUTCOMES = ("bot_handled", "escalated", "failed_escalation", "timeout")
#: How Ultimate files are written: as the seed documents them, or as the live v3 export serves them.
ULTIMATE_FORMS = ("seed", "live")
OUTCOME_WEIGHTS = (0.55, 0.25, 0.1, 0.1)

INTENTS = (
    ("Greeting", True),
    ("Order status", False),
    ("Refund", False),
    ("Change address", False),
    ("Opening hours", False),
    ("Talk to a human/agent", False),
    ("Cancel subscription", False),
)

FIRST_NAMES = ("ana", "li", "sam", "noor", "ivan", "maria", "tom", "yuki")
USER_LINES = (
    "Hi, where is my order {order}?",
    "My email is {email}, please update it",
    "You can call me on {phone}",
    "My ID number is {idnum}",
    "I want a refund for order {order}",
    "What are your opening hours?",
    "Can I change my delivery address?",
    "I want to cancel my subscription",
    "Thanks! 😊",
    "Hola, necesito ayuda con mi pedido",
)
BOT_LINES = (
    "Hello! How can I help you today?",
    "Let me look that up for you.",
    "Your order is on its way.",
    "I have updated your details.",
    "Our opening hours are 9:00 to 18:00.",
    "Is there anything else I can help with?",
)
AGENT_LINES = (
    "Hi, this is {agent} from support, I'm looking at your case.",
    "I've issued the refund, you'll see it in 3-5 days.",
    "Could you confirm the email on the account?",
    "Done, anything else?",
)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _ch(t: dt.datetime) -> str:
    """ClickHouse DateTime literal (UTC, second precision)."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


@dataclass
class Turn:
    at: dt.datetime
    role: str  # user | bot | agent | system
    text: str | None
    mid: str
    intent: str | None = None
    not_meaningful: bool = False
    understood: bool = True


@dataclass
class Conversation:
    """One simulated conversation, vendor-agnostic."""

    cid: str
    tenant: str
    user_id: str
    channel: str
    language: str
    outcome: str
    started_at: dt.datetime
    turns: list[Turn]
    handoff_at: dt.datetime | None = None
    agent_id: str | None = None
    agent_joined_at: dt.datetime | None = None
    agent_left_at: dt.datetime | None = None
    rating: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ended_at(self) -> dt.datetime:
        return self.turns[-1].at


class Generator:
    def __init__(self, seed: int, start: dt.date, days: int, per_day: int, bad_share: float,
                 ultimate_form: str = "seed") -> None:
        if ultimate_form not in ULTIMATE_FORMS:
            raise ValueError(f"ultimate_form: one of {', '.join(ULTIMATE_FORMS)}, not {ultimate_form!r}")
        self.rng = random.Random(seed)
        #: The live form's own choices: the simulation, and so every other file, is the seed form's.
        self.live_rng = random.Random(f"{seed}-live")
        self.seed = seed
        self.start = start
        self.days = days
        self.per_day = per_day
        self.bad_share = bad_share
        self.ultimate_form = ultimate_form

    # -- the shared simulation ---------------------------------------------------------------

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _fill(self, template: str, agent: str = "") -> str:
        r = self.rng
        return template.format(
            order=f"#{r.randint(10000, 99999)}",
            email=f"{r.choice(FIRST_NAMES)}.{r.randint(1, 99)}@example.{r.choice(('com', 'org', 'es'))}",
            phone=f"+34 6{r.randint(10, 99)} {r.randint(100, 999)} {r.randint(100, 999)}",
            idnum=f"{r.randint(10_000_000, 99_999_999)}",
            agent=agent,
        )

    def conversation(self, tenant: str, day: dt.date, agents: list[str]) -> Conversation:
        r = self.rng
        # Conversations start through the day; some late ones end after midnight.
        start = dt.datetime.combine(day, dt.time(), UTC) + dt.timedelta(seconds=r.randint(0, 86_399))
        edge = r.random()
        if edge < 0.03:
            start = dt.datetime.combine(day, dt.time(), UTC)  # exactly at midnight: a day-edge case
        elif edge < 0.08:
            # late in the evening: many of these end after midnight, in the next day's Ultimate file
            start = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), UTC) - dt.timedelta(
                seconds=r.randint(30, 240))
        outcome = r.choices(OUTCOMES, OUTCOME_WEIGHTS)[0]
        t = start
        turns: list[Turn] = []
        intent_pool = [i for i in INTENTS if i[0] not in ("Greeting", "Talk to a human/agent")]

        def add(role: str, text: str | None, gap: tuple[int, int], **kw) -> None:
            nonlocal t
            t = t + dt.timedelta(seconds=r.randint(*gap))
            turns.append(Turn(t, role, text, self._id(), **kw))

        add("user", "Hi", (0, 0), intent="Greeting", not_meaningful=True)
        add("bot", BOT_LINES[0], (1, 3))
        for _ in range(r.randint(1, 3)):
            name, nm = r.choice(intent_pool)
            understood = r.random() > 0.15
            add("user", self._fill(r.choice(USER_LINES)), (5, 90), intent=name if understood else None,
                not_meaningful=nm, understood=understood)
            add("bot", self._fill(r.choice(BOT_LINES)), (1, 4))
            if r.random() < 0.05:
                add("user", None, (5, 30))  # an image: no text
        conv = Conversation(
            cid=self._id(), tenant=tenant, user_id=self._id(), channel=r.choice(("web", "whatsapp")),
            language=r.choice(("en", "es", "en", None)) or "en", outcome=outcome, started_at=start, turns=turns,
        )
        if outcome in ("escalated", "failed_escalation"):
            add("user", "I want to talk to a human", (5, 60), intent="Talk to a human/agent")
            add("system", "Transferring you to a human agent", (1, 2))
            conv.handoff_at = t
            if outcome == "escalated":
                conv.agent_id = r.choice(agents)
                conv.agent_joined_at = t + dt.timedelta(seconds=r.randint(10, 600))
                t = conv.agent_joined_at
                for line in r.sample(AGENT_LINES, r.randint(2, 4)):
                    add("agent", self._fill(line, agent=conv.agent_id), (15, 240))
                    if r.random() < 0.6:
                        add("user", self._fill(r.choice(USER_LINES)), (10, 120))
                conv.agent_left_at = t + dt.timedelta(seconds=r.randint(5, 60))
                conv.rating = r.choice((None, 1, 2, 3, 4, 5, 5, 4))
            else:
                add("system", "No agent is available right now", (120, 300))
        elif outcome == "timeout":
            add("bot", "Are you still there?", (60, 300))
        return conv

    def simulate(self, tenant: str, agents: list[str]) -> list[Conversation]:
        convs = []
        for d in range(self.days):
            day = self.start + dt.timedelta(days=d)
            n = max(1, int(self.per_day * self.rng.uniform(0.8, 1.2)))
            convs.extend(self.conversation(tenant, day, agents) for _ in range(n))
        return convs

    def _bad(self) -> bool:
        return self.bad_share > 0 and self.rng.random() < self.bad_share

    # -- Botslovers ----------------------------------------------------------------------------

    def botslovers(self, out: Path, company: str) -> None:
        agents = [f"{company}-agent-{i}" for i in range(1, 5)]
        bot_id = f"{company}-bot"
        messages, log, status = [], [], []
        for c in self.simulate(company, agents):
            for turn in c.turns:
                sender_type = {"user": "user", "bot": "bot", "system": "system", "agent": "human"}[turn.role]
                sender_id = {"user": c.user_id, "bot": bot_id, "system": "system", "agent": c.agent_id}[turn.role]
                direction = "inbound" if turn.role == "user" else "outbound"
                row = {
                    "sender_id": sender_id, "sender_type": sender_type, "id": turn.mid, "created_at": _ch(turn.at),
                    "channel": c.channel, "session": c.cid, "direction": direction, "type": direction,
                    "text": turn.text, "language": c.language,
                }
                if self._bad():
                    row[self.rng.choice(("sender_type", "id"))] = self.rng.choice(("robot", ""))
                messages.append(row)
                if self.rng.random() < 0.01:
                    messages.append(dict(row))  # the vendor delivers a message twice now and then
            log.extend(self._agent_log_rows(c, bot_id))
        for d in range(self.days):
            day = self.start + dt.timedelta(days=d)
            for agent in agents:
                status.extend(self._status_rows(agent, day))
        _write_jsonl(out / "botslovers" / company / "messages.jsonl", messages)
        _write_jsonl(out / "botslovers" / company / "chat_agent_log.jsonl", log)
        _write_jsonl(out / "botslovers" / company / "agent_status_logs.jsonl", status)

    def _agent_log_rows(self, c: Conversation, bot_id: str) -> list[dict]:
        r = self.rng

        def row(event: str, agent: str, joined: dt.datetime, left: dt.datetime | None, rating=None) -> dict:
            stamp = left or joined
            return {
                "id": self._id(), "chat_id": c.cid, "agent_id": agent, "joined_at": _ch(joined),
                "left_at": _ch(left) if left else None, "event": event, "response_rating": rating,
                "created_at": _ch(joined), "updated_at": _ch(stamp), "deleted_at": None,
            }

        rows = [row("bot_assigned", bot_id, c.started_at, c.handoff_at or c.ended_at)]
        if c.handoff_at:
            rows.append(row(r.choice(("chat_escalated", "assigned_to_human")), bot_id, c.handoff_at, c.handoff_at))
        if c.outcome == "escalated":
            joined = row("agent_joined", c.agent_id, c.agent_joined_at, None)
            rows.append(joined)
            # The participation is closed later; when that lands on the next day, the row's
            # second version (left_at, rating, updated_at set) arrives a day after the first.
            closed = dict(joined, left_at=_ch(c.agent_left_at), response_rating=c.rating)
            late = r.random() < 0.3
            later = dt.timedelta(hours=r.randint(20, 30)) if late else dt.timedelta()
            closed["updated_at"] = _ch(c.agent_left_at + later)
            rows.append(closed)
            if r.random() < 0.1:
                rows.append(row("transferred", c.agent_id, c.agent_left_at, c.agent_left_at))
            rows.append(row(r.choice(("resolved", "manual_close")), c.agent_id, c.agent_left_at, c.agent_left_at))
        elif c.outcome == "failed_escalation":
            rows.append(row("agent_timeout", bot_id, c.ended_at, c.ended_at))
        elif c.outcome == "timeout":
            rows.append(row("user_timeout", bot_id, c.ended_at, c.ended_at))
        else:
            rows.append(row("resolved", bot_id, c.ended_at, c.ended_at))
        if rows and self._bad():
            rows[-1]["event"] = "agent_vanished"
        if r.random() < 0.02:
            rows[-1]["deleted_at"] = rows[-1]["updated_at"]
        return rows

    def _status_rows(self, agent: str, day: dt.date) -> list[dict]:
        r = self.rng
        t = dt.datetime.combine(day, dt.time(r.randint(6, 10)), UTC) + dt.timedelta(minutes=r.randint(0, 59))
        plan = [("offline", "online")]
        for _ in range(r.randint(1, 3)):
            plan += [("online", r.choice(("break", "training", "inactive"))), (None, "online")]
        plan += [("online", "ending_shift"), ("ending_shift", "offline")]
        rows, prev_status, prev_at = [], "offline", None
        for old, new in plan:
            old = old or prev_status
            rows.append({
                "id": self._id(), "agent_id": agent, "old_status": old, "new_status": new,
                "status_changed_at": _ch(t), "created_at": _ch(t),
                "duration_seconds": int((t - prev_at).total_seconds()) if prev_at else None,
            })
            prev_status, prev_at = new, t
            t = t + dt.timedelta(minutes=r.randint(15, 150))
        return rows

    # -- A8 -----------------------------------------------------------------------------------

    def a8(self, out: Path) -> None:
        tables: dict[str, list[dict]] = {name: [] for name in (
            "user", "chat_state", "bot_messages", "user_message_details", "user_activities", "event_metrics",
            "agent_activities", "a8bot_nlp", "agent_sessions", "agent_message_details", "messages")}
        r = self.rng
        for bot in A8_BOTS:
            agents = [f"{bot}-agent-{i}" for i in range(1, 4)]
            for d in range(self.days):
                day = self.start + dt.timedelta(days=d)
                for agent in agents:
                    login = dt.datetime.combine(day, dt.time(8), UTC) + dt.timedelta(minutes=r.randint(0, 90))
                    session = self._id()
                    name = r.choice(FIRST_NAMES).title()
                    tables["agent_sessions"].append({
                        "time": _iso(login), "name": name, "agent_id": agent, "session_id": session,
                        "groups": ["support"], "timezone": "Europe/Madrid", "os": "MacOS", "lang": "en",
                        "browser_name": "Chrome", "browser_version": "131.0", "device_name": "laptop",
                        "screen_size_width": 1440, "screen_size_height": 900, "custom_fields": {},
                        "ip_address": f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
                        "email": f"{name.lower()}@{bot}.example.com",
                    })
                    for event, at in (("loggedIn", login), ("loggedOut", login + dt.timedelta(hours=8))):
                        tables["agent_activities"].append({
                            "time": _iso(at), "agent_id": agent, "session_id": session, "event_name": event,
                            "custom_fields": {}, "chat_id": None,
                        })
            for c in self.simulate(bot, agents):
                self._a8_conversation(tables, c, bot)
        for name, rows in tables.items():
            _write_jsonl(out / "a8" / f"{name}.jsonl", rows)

    def _a8_conversation(self, t: dict[str, list[dict]], c: Conversation, bot: str) -> None:
        r = self.rng
        bot_agent = f"{bot}-bot"
        t["user"].append({
            "time": _iso(c.started_at), "client_id": c.user_id, "org_id": "org-a8", "channel": c.channel,
            "timezone": "Europe/Madrid", "os": r.choice(("Linux", "MacOS", "Windows", "Android")),
            "lang": c.language, "url": f"https://{bot}.example.com/help", "browser_name": "Firefox",
            "browser_version": "133.0", "ip_address": f"203.0.113.{r.randint(1, 254)}",
            "latitude": round(r.uniform(-60, 60), 6), "longitude": round(r.uniform(-170, 170), 6),
            "device_name": "phone", "screen_size_width": 390, "screen_size_height": 844,
            "device_orientation": "portrait", "isp_provider": r.choice(("Movistar", "Vodafone")),
            "data_speed": "4g", "bot_handle": bot, "custom_fields": {"plan": r.choice(("free", "pro"))},
            "channel_data": {},
        })
        t["user_activities"].append({
            "_id": self._id(), "time": _iso(c.started_at), "client_id": c.user_id, "channel": c.channel,
            "event_name": "widgetMaximize", "error": None, "bot_handle": bot,
        })
        states = [("newChat", c.started_at, None), ("assignedChat", c.started_at, bot_agent)]
        if c.handoff_at:
            states.append(("TransferChat", c.handoff_at, bot_agent))
        if c.agent_joined_at:
            states.append(("agentAssigned", c.agent_joined_at, c.agent_id))
        states.append(("timeoutChat" if c.outcome in ("timeout", "failed_escalation") else "closedChat", c.ended_at,
                       c.agent_id or bot_agent))
        for state, at, agent in states:
            t["chat_state"].append({
                "time": _iso(at), "chat_id": c.cid, "agent_id": agent, "state": state, "custom_fields": {},
                "bot_handle": bot, "id": self._id(), "group_id": "support",
            })
        prev_mid = None
        for turn in c.turns:
            msg_from = {"user": "user", "bot": "bot", "agent": "agent", "system": "bot"}[turn.role]
            row = {
                "time": _iso(turn.at), "chat_id": c.cid, "mid": turn.mid,
                "msg_type": "text" if turn.text else "attachment", "reply_to_id": prev_mid, "bot_handle": bot,
                "msg_from": msg_from, "resp_time": round(r.uniform(0.2, 4.0), 3),
                "msg": {"text": turn.text} if turn.text else {"attachment": "image.png"},
            }
            if self._bad():
                row[r.choice(("msg_from", "chat_id"))] = r.choice(("system", None))
            t["messages"].append(row)
            prev_mid = turn.mid
            if turn.role == "user":
                t["user_message_details"].append({
                    "time": _iso(turn.at), "chat_id": c.cid, "mid": turn.mid, "is_handeled": turn.understood,
                    "handling_agent": c.agent_id if c.agent_joined_at and turn.at > c.agent_joined_at else bot_agent,
                    "from_suggestion": r.random() < 0.2,
                })
                t["a8bot_nlp"].append({
                    "mid": turn.mid, "time": _iso(turn.at), "basic_nlp_handled": turn.intent == "Greeting",
                    "nlp_provider": "LUIS", "intent": turn.intent or "None",
                    "intent_score": round(r.uniform(0.7, 0.99) if turn.understood else r.uniform(0.05, 0.4), 4),
                    "entities": [], "is_spellcheck_hit": False, "spellcheck_status": None,
                    "spellcheck_resp_time": None, "is_nlp_hit": True, "nlp_status": 200,
                    "nlp_resp_time": round(r.uniform(50, 400), 1), "error": None, "altered_query": False,
                    "bot_handle": bot, "event_triggered": None,
                })
            elif turn.role in ("bot", "system"):
                flow = r.random() < 0.5
                t["bot_messages"].append({
                    "time": _iso(turn.at), "chat_id": c.cid, "mid": turn.mid, "is_flow_response": flow,
                    "is_qna_response": not flow, "from_id": bot_agent, "flow_name": "main" if flow else None,
                    "node_name": "reply", "bot_handle": bot,
                })
            else:
                t["agent_message_details"].append({
                    "time": _iso(turn.at), "mid": turn.mid, "agent_id": c.agent_id, "session_id": None,
                    "chat_id": c.cid, "assist": False, "assist_passed": False, "assist_edited": False,
                    "pilot_mode": False, "pilot_passed": False, "is_faq": False, "faq_id": None,
                    "word_count": len((turn.text or "").split()),
                })
        t["event_metrics"].append({
            "time": _iso(c.ended_at), "user_id": c.user_id, "chat_id": c.cid, "bot_handle": bot,
            "event_name": {"name": "chatEnded"}, "error": {"outcome": c.outcome},
        })

    # -- Ultimate -----------------------------------------------------------------------------

    def ultimate(self, out: Path, bot_id: str) -> None:
        by_end_day: dict[dt.date, list[dict]] = {}
        for c in self.simulate(bot_id, [f"{bot_id}-agent-{i}" for i in range(1, 4)]):
            record = self._ultimate_record(c, bot_id)
            if self.ultimate_form == "live":
                record = self.live_record(record, c)
            by_end_day.setdefault(c.ended_at.date(), []).append(record)
        for day, records in sorted(by_end_day.items()):
            if self.ultimate_form == "live" and day == self.start + dt.timedelta(days=1):
                _write_jsonl(out / "ultimate" / bot_id / f"{day.isoformat()}.jsonl", records)  # one day as JSON Lines
            elif self.bad_share > 0:
                lines = [json.dumps(rec, ensure_ascii=False) for rec in records]
                if records:
                    lines[self.rng.randrange(len(lines))] = lines[0][: len(lines[0]) // 2]  # truncated record
                path = out / "ultimate" / bot_id / f"{day.isoformat()}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            else:
                path = out / "ultimate" / bot_id / f"{day.isoformat()}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")

    def _ultimate_record(self, c: Conversation, bot_id: str) -> dict:
        r = self.rng
        status = {
            "bot_handled": "botHandled",
            "escalated": r.choice(("agent", "agent", "email", "customEscalation")),
            "failed_escalation": "failedEscalation",
            "timeout": "botHandled",
        }[c.outcome]
        resolution = {
            "bot_handled": r.choice(("informed", "resolved")),
            "escalated": "escalated",
            "failed_escalation": "escalated",
            "timeout": "undefined",
        }[c.outcome]
        users = [t for t in c.turns if t.role == "user"]
        bots = [t for t in c.turns if t.role in ("bot", "system")]
        intents = [
            {"intent_name": t.intent, "intent_timestamp": _iso(t.at), "not_meaningful": t.not_meaningful,
             "reply_id": self._id()}
            for t in c.turns if t.intent
        ]
        suggestion_only = r.random() < 0.03  # suggestion-engine conversation: no bot messages
        record = {
            "bot_id": bot_id, "bot_name": bot_id.replace("-", " ").title(), "conversation_id": c.cid,
            "platform_conversation_id": f"zd-{r.randint(100000, 999999)}",
            "conversation_start_time": _iso(c.started_at), "conversation_end_time": _iso(c.ended_at),
            "language": c.language, "channel": r.choice(("chat", "chat", "ticket")),
            "labels": r.sample(["vip", "new", "returning", "mobile"], r.randint(0, 2)),
            "conversations_data": json.dumps({"order_id": f"{r.randint(10000, 99999)}", "plan": "pro"}),
            "test_mode": r.random() < 0.02, "conversation_status": status, "last_resolution": resolution,
            "triggered_replies": [f"reply-{i}" for i in range(len(bots))],
            "triggered_intent_replies": intents, "is_llm_conversation": r.random() < 0.3,
            "llm_notUnderstood_count": str(r.randint(0, 2)), "llm_responseGenerated_count": str(r.randint(0, 4)),
            "llm_errorOccurred_count": "0", "llm_escalationRequired_count": str(int(c.handoff_at is not None)),
            "llm_fallback_count": str(r.randint(0, 1)),
            "bot_messages_count": "0" if suggestion_only else str(len(bots)),
            "visitor_messages_count": str(len(users)),
            "not_understood_messages_count": str(sum(1 for t in users if not t.understood)),
        }
        if self._bad():
            record[r.choice(("visitor_messages_count", "last_resolution"))] = r.choice(("many", "unknownResolution"))
        return record

    def live_record(self, record: dict, c: Conversation) -> dict:
        """``record`` as the live v3 ("enhanced Gen3") export serves it, saying the same: upper-case
        keys, ``CONVERSATION_DATA``, counts as numbers (or still strings), flags as strings, the end
        time as epoch milliseconds, the Gen3 fields, and account plumbing no column names (landed
        in ``extra``).  Days without an ended conversation have no file (v3 answers 404)."""
        r = self.live_rng
        live = {}
        for key, value in record.items():
            if key.endswith("_count") and isinstance(value, str) and value.isdigit() and r.random() < 0.7:
                value = int(value)
            elif key == "test_mode":
                value = str(value).lower()
            elif key == "conversation_end_time":
                value = _ms(c.ended_at)
            live[("conversation_data" if key == "conversations_data" else key).upper()] = value
        status, resolution = record["conversation_status"], record["last_resolution"]
        automated = status == "botHandled" and resolution == "resolved"
        gen3 = {
            "conversation_type": "messaging", "resolution_tier": "automated" if automated else (
                "assisted" if status in ("agent", "email", "customEscalation") else "unresolved"),
            "automated_resolution": automated if r.random() < 0.8 else str(automated).lower(),
            "automated_resolution_reasoning": "The customer confirmed the answer." if automated else None,
            "rbp_status_name": "solved" if automated else "open", "has_knowledge_response_attempt": r.random() < 0.5,
            "session_ended_timestamp": int((c.ended_at + dt.timedelta(seconds=30)).timestamp()),
            "segments": ["returning"] if r.random() < 0.3 else [],
            "triggered_use_cases": [t["intent_name"] for t in record["triggered_intent_replies"]][:2],
            "triggered_procedures": [], "knowledge_sources": [{"article_name": "Delivery times", "article_id": 17}],
            "knowledge_notUnderstood_count": r.randint(0, 1), "knowledge_responseGenerated_count": r.randint(0, 3),
            "knowledge_errorOccurred_count": 0, "knowledge_escalationRequired_count": int(c.handoff_at is not None),
            "knowledge_fallback_count": str(r.randint(0, 1)),
            # seen in the live export, named by no document: they land in extra and are reported as drift
            "instance_account_id": 4711, "zdp_meta_processed_timestamp": _iso(c.ended_at + dt.timedelta(hours=2)),
            "conversation_end_date": c.ended_at.date().isoformat(),
        }
        return {**live, **{key.upper(): value for key, value in gen3.items()}}

    # -- Unless -------------------------------------------------------------------------------

    def unless(self, out: Path, website: str) -> None:
        r = self.rng
        root = out / "unless" / UNLESS_ACCOUNT / "conversations" / website
        for c in self.simulate(website, ["support-1", "support-2"]):
            session = c.user_id
            logs = []
            for turn in c.turns:
                sender = {"user": "user", "bot": "bot", "agent": "support", "system": "bot"}[turn.role]
                log = {
                    "type": "message" if turn.text or turn.role != "user" else "input", "sender": sender,
                    "timestamp": _ms(turn.at), "uuid": turn.mid, "hidden": turn.role == "system",
                    "historical": None, "segmentId": turn.intent, "messageFormat": r.choice(("md", "html", None)),
                    "parentId": None, "isLiveChat": turn.role == "agent" or (
                        c.agent_joined_at is not None and turn.at >= c.agent_joined_at),
                    "content": turn.text or "",
                }
                logs.append(log)
            if c.outcome == "failed_escalation":
                logs.append({"type": "error", "sender": "bot", "timestamp": _ms(c.ended_at), "uuid": self._id(),
                             "hidden": True, "content": "live chat unavailable"})
            doc = {
                "chatHistory": logs, "conversationName": None, "history": logs,
                "metadata": {"page": "/checkout", "utm_source": r.choice(("google", "newsletter"))},
                "personalizationId": self._id(), "sessionId": session, "startingMessageSent": True,
                "websiteId": website,
            }
            if r.random() > 0.1:  # the seed warns createdAt may be absent on old data
                doc["createdAt"] = _ms(c.started_at)
            path = root / session / f"{c.cid}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            body = json.dumps(doc, ensure_ascii=False)
            if self._bad():
                body = r.choice((body[: len(body) // 3], "", "{}"))  # truncated, empty, or no fields
            path.write_text(body, encoding="utf-8")

    # -- everything ---------------------------------------------------------------------------

    def write(self, out: Path) -> dict:
        out.mkdir(parents=True, exist_ok=True)
        for company in COMPANIES:
            self.botslovers(out, company)
        self.a8(out)
        for bot_id in ULTIMATE_BOTS:
            self.ultimate(out, bot_id)
        for website in UNLESS_WEBSITES:
            self.unless(out, website)
        manifest = {
            "seed": self.seed, "start": self.start.isoformat(), "days": self.days,
            "end": (self.start + dt.timedelta(days=self.days - 1)).isoformat(),
            "conversations_per_day": self.per_day, "bad_records": self.bad_share,
            "botslovers": {"companies": list(COMPANIES)},
            "a8": {"bots": list(A8_BOTS)},
            "ultimate": {"bots": list(ULTIMATE_BOTS), "form": self.ultimate_form},
            "unless": {"account": UNLESS_ACCOUNT, "websites": list(UNLESS_WEBSITES)},
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        return manifest


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False))
            fh.write("\n")


def generate(out: Path, *, seed: int = 7, days: int = 3, start: dt.date | None = None,
             per_day: int = 40, bad_share: float = 0.0, ultimate_form: str = "seed") -> dict:
    """Write a dataset; ``start`` defaults to ``days`` days before today (UTC)."""
    start = start or (dt.datetime.now(UTC).date() - dt.timedelta(days=days))
    return Generator(seed, start, days, per_day, bad_share, ultimate_form).write(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--start", type=dt.date.fromisoformat, default=None,
                   help="first day (UTC); default: DAYS days before today")
    p.add_argument("--per-day", type=int, default=40, help="conversations per tenant per day")
    p.add_argument("--bad-records", type=float, default=0.0, help="share of deliberately bad records (0..1)")
    p.add_argument("--ultimate-form", choices=ULTIMATE_FORMS, default="seed",
                   help="Ultimate files as the seed documents them, or as the live v3 export serves them")
    a = p.parse_args(argv)
    m = generate(a.out, seed=a.seed, days=a.days, start=a.start, per_day=a.per_day, bad_share=a.bad_records,
                 ultimate_form=a.ultimate_form)
    print(f"wrote {a.days} days from {m['start']} to {a.out}")


if __name__ == "__main__":
    main()
