"""A8Chat: the eleven TimescaleDB analytics tables (seed 001).

Every table is a time series windowed on ``time``.  The vendor gives no reliable
row ids, so a window is replaced as a whole (delete ``[start, end)`` of the
tenant, insert).  The tenant is ``bot_handle`` where the table has it; four
tables (user message details, agent activities, agent sessions, agent message
details) carry no bot and are replaced per window for the whole database.
"""

from chat_ingest.rules import TENANT_MAX_BYTES
from chat_ingest.tablespec import Column, MergeRule, TableSpec

SOURCE = "a8"

MSG_FROM = ("user", "bot", "agent")
#: "whether it is a text/HyperLink/Attachments" in the seed: examples, in its spelling and as the
#: values appear in data.
MSG_TYPES = ("text", "HyperLink", "Attachments", "hyperlink", "attachment", "image", "quickReply")
CHANNELS = ("web", "facebook", "whatsapp")


def _time() -> Column:
    return Column("time", "timestamptz", "timestamptz", nullable=False)


def _bot_handle() -> Column:
    return Column("bot_handle", "text", "text", nullable=False, keyed=True, max_bytes=TENANT_MAX_BYTES)


def _spec(name: str, columns: tuple[Column, ...], *, description: str, conversation_column: str | None = None
          ) -> TableSpec:
    has_bot = any(c.name == "bot_handle" for c in columns)
    return TableSpec(
        source=SOURCE,
        name=name,
        description=description,
        columns=columns,
        tenant_column="bot_handle" if has_bot else None,
        tenant_in_source=has_bot,
        merge_rule=MergeRule.REPLACE_WINDOW,
        cursor="time",
        conversation_column=conversation_column,
    )


def _text(name: str, **kw) -> Column:
    return Column(name, "text", "text", **kw)


def _id(name: str, **kw) -> Column:
    """A value the warehouse keys or indexes rows by (a chat, message, agent or user id, an intent)."""
    return _text(name, keyed=True, **kw)


def _bool(name: str) -> Column:
    return Column(name, "boolean", "boolean")


def _json(name: str) -> Column:
    return Column(name, "jsonb", "jsonb")


def _int(name: str) -> Column:
    return Column(name, "integer", "integer")


def _num(name: str, pg_type: str = "double precision", value_range=None) -> Column:
    return Column(name, pg_type, pg_type, value_range=value_range)


USER = _spec("user", description="Users who interacted with a bot; one row when a user first connects.", columns=(
    _time(), _id("client_id", nullable=False), _text("org_id"), _text("channel"), _text("timezone"),
    _text("os"), _text("lang"), _text("url"), _text("browser_name"), _text("browser_version"),
    _text("ip_address", description="Personal data."), _num("latitude", "numeric(9,6)", (-90, 90)),
    _num("longitude", "numeric(9,6)", (-180, 180)), _text("device_name"), _int("screen_size_width"),
    _int("screen_size_height"), _text("device_orientation"), _text("isp_provider"), _text("data_speed"),
    _bot_handle(), _json("custom_fields"), _json("channel_data"),
))
CHAT_STATE = _spec("chat_state", description="Stages of a conversation; the latest is the chat's current state.",
                   conversation_column="chat_id", columns=(
    _time(), _id("chat_id", nullable=False), _id("agent_id"),
    _text("state", nullable=False, vocabulary=True), _json("custom_fields"), _bot_handle(),
    _id("id"), _text("group_id"),
))
BOT_MESSAGES = _spec("bot_messages", description="Bot replies.", columns=(
    _time(), _id("chat_id", nullable=False), _id("mid", nullable=False), _bool("is_flow_response"),
    _bool("is_qna_response"), _text("from_id"), _text("flow_name"), _text("node_name"), _bot_handle(),
))
USER_MESSAGE_DETAILS = _spec("user_message_details", description="User messages and who handled them.", columns=(
    _time(), _id("chat_id", nullable=False), _id("mid", nullable=False), _bool("is_handeled"),
    _text("handling_agent"), _bool("from_suggestion"),
))
USER_ACTIVITIES = _spec("user_activities", description="Widget events of users (maximise, minimise, ...).", columns=(
    _text("_id"), _time(), _text("client_id"), _text("channel"), _text("event_name"), _text("error"),
    _bot_handle(),
))
EVENT_METRICS = _spec("event_metrics", description="Bot events with JSON payloads.", columns=(
    _time(), _text("user_id"), _id("chat_id"), _bot_handle(), _json("event_name"), _json("error"),
))
AGENT_ACTIVITIES = _spec("agent_activities", description="Agent log-ins, log-outs and status changes.", columns=(
    _time(), _id("agent_id", nullable=False), _text("session_id"), _id("event_name"),
    _json("custom_fields"), _id("chat_id"),
))
A8BOT_NLP = _spec("a8bot_nlp", description="NLP metrics per user message.", columns=(
    _id("mid", nullable=False), _time(), _bool("basic_nlp_handled"), _text("nlp_provider"), _id("intent"),
    _num("intent_score", value_range=(0, 1)), _json("entities"), _bool("is_spellcheck_hit"), _text("spellcheck_status"),
    _num("spellcheck_resp_time"), _bool("is_nlp_hit"), _int("nlp_status"), _num("nlp_resp_time"),
    _text("error"), _bool("altered_query"), _bot_handle(), _text("event_triggered"),
))
AGENT_SESSIONS = _spec("agent_sessions", description="Live-chat console log-in sessions of agents.", columns=(
    _time(), _text("name", description="Personal data."), _id("agent_id", nullable=False),
    _text("session_id"), _json("groups"), _text("timezone"), _text("os"), _text("lang"),
    _text("browser_name"), _text("browser_version"), _text("device_name"), _int("screen_size_width"),
    _int("screen_size_height"), _json("custom_fields"), _text("ip_address", description="Personal data."),
    _text("email", description="Personal data."),
))
AGENT_MESSAGE_DETAILS = _spec("agent_message_details", description="Agent messages and assist/pilot usage.", columns=(
    _time(), _id("mid", nullable=False), _id("agent_id"), _text("session_id"), _id("chat_id"),
    _bool("assist"), _bool("assist_passed"), _bool("assist_edited"), _bool("pilot_mode"),
    _bool("pilot_passed"), _bool("is_faq"), _text("faq_id"), _int("word_count"),
))
MESSAGES = _spec("messages", description="The messages of every participant; the body is JSON.",
                 conversation_column="chat_id", columns=(
    _time(), _id("chat_id", nullable=False), _id("mid", nullable=False),
    _text("msg_type", examples=MSG_TYPES), _text("reply_to_id"), _bot_handle(),
    _text("msg_from", nullable=False, allowed=MSG_FROM), _num("resp_time"), _json("msg"),
))

TABLES = {
    spec.name: spec
    for spec in (
        USER, CHAT_STATE, BOT_MESSAGES, USER_MESSAGE_DETAILS, USER_ACTIVITIES, EVENT_METRICS,
        AGENT_ACTIVITIES, A8BOT_NLP, AGENT_SESSIONS, AGENT_MESSAGE_DETAILS, MESSAGES,
    )
}
