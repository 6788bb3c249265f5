"""Ultimate: the Data Export API's daily files of ended conversations (seed 002).

A file holds the conversations that *ended* on its date; files are immutable, so
one export date of one bot is one partition, replaced as a whole (REPLACE_WINDOW
on ``export_date``).  The export types the ``*_count`` fields as strings: they
land as integers, and a value that is not one is quarantined, never zeroed.
"""

from __future__ import annotations

import orjson

from chat_ingest.sources.values import as_text
from chat_ingest.tablespec import Column, MergeRule, TableSpec

SOURCE = "ultimate"

CHANNELS = ("chat", "ticket")
LAST_RESOLUTIONS = ("informed", "resolved", "escalated", "undefined")
#: The seed's metric queries name botHandled, agent, email, customEscalation and failedEscalation.
CONVERSATION_STATUSES = ("botHandled", "agent", "email", "customEscalation", "failedEscalation")
COUNT_FIELDS = (
    "llm_notUnderstood_count", "llm_responseGenerated_count", "llm_errorOccurred_count",
    "llm_escalationRequired_count", "llm_fallback_count", "bot_messages_count", "visitor_messages_count",
    "not_understood_messages_count",
)
JSON_FIELDS = ("labels", "conversations_data", "triggered_replies", "triggered_intent_replies")


def _spec(name: str, columns: tuple[Column, ...], description: str, **kw) -> TableSpec:
    return TableSpec(source=SOURCE, name=name, description=description, columns=columns, tenant_column="bot_id",
                     tenant_in_source=True, merge_rule=MergeRule.REPLACE_WINDOW, cursor="export_date", **kw)


CONVERSATIONS = _spec("conversations", description="One row per conversation, in the file of the day it ended.",
                      day_column="conversation_start_time", ordered_pairs=(("conversation_end_time", "conversation_start_time"),), columns=(
    Column("export_date", "date", "date", nullable=False),
    Column("bot_id", "text", nullable=False),
    Column("bot_name", "text"),
    Column("conversation_id", "text", nullable=False),
    Column("platform_conversation_id", "text"),
    Column("conversation_start_time", "timestamptz", nullable=False),
    Column("conversation_end_time", "timestamptz", nullable=False),
    Column("language", "text"),
    Column("channel", "text", allowed=CHANNELS),
    Column("labels", "jsonb"),
    Column("conversations_data", "jsonb", description="A JSON string in the export, parsed."),
    Column("test_mode", "boolean"),
    Column("conversation_status", "text", allowed=CONVERSATION_STATUSES),
    Column("last_resolution", "text", allowed=LAST_RESOLUTIONS),
    Column("triggered_replies", "jsonb"),
    Column("triggered_intent_replies", "jsonb"),
    Column("is_llm_conversation", "boolean"),
    *(Column(name, "integer", value_range=(0, None)) for name in COUNT_FIELDS),
))

INTENTS = _spec("intents", description="One row per triggered intent of a conversation, in order.",
                day_column="intent_timestamp", columns=(
    Column("export_date", "date", "date", nullable=False),
    Column("bot_id", "text", nullable=False),
    Column("conversation_id", "text", nullable=False),
    Column("position", "integer", nullable=False, value_range=(0, None)),
    Column("intent_name", "text"),
    Column("intent_timestamp", "timestamptz"),
    Column("not_meaningful", "boolean"),
))

TABLES = {spec.name: spec for spec in (CONVERSATIONS, INTENTS)}


def conversation_row(record: dict, export_date: str) -> dict[str, str | None]:
    row = {c: as_text(record.get(c)) for c in CONVERSATIONS.column_names if c != "export_date"}
    data = record.get("conversations_data")
    if isinstance(data, str):  # a JSON document inside a string: land the document, or the raw text to quarantine
        try:
            row["conversations_data"] = orjson.dumps(orjson.loads(data)).decode()
        except orjson.JSONDecodeError:
            row["conversations_data"] = data
    row["export_date"] = export_date
    return row


def intent_rows(record: dict, export_date: str) -> list[dict[str, str | None]]:
    """One row per triggered intent; an item that is not an object is quarantined with its text."""
    intents = record.get("triggered_intent_replies") or []
    if not isinstance(intents, list):
        intents = [intents]
    rows = []
    for i, item in enumerate(intents):
        row = {"export_date": export_date, "bot_id": as_text(record.get("bot_id")),
               "conversation_id": as_text(record.get("conversation_id")), "position": str(i)}
        if isinstance(item, dict):
            row.update(intent_name=as_text(item.get("intent_name")), intent_timestamp=as_text(item.get("intent_timestamp")),
                       not_meaningful=as_text(item.get("not_meaningful")))
        else:
            row.update(_pre_reason="triggered_intent_replies: an item is not an object", _raw=as_text(item))
        rows.append(row)
    return rows
