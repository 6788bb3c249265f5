"""Ultimate: the Data Export API's daily files of ended conversations (seed 002).

A file holds the conversations that *ended* on its date; files are immutable, so
one export date of one bot is one partition, replaced as a whole (REPLACE_WINDOW
on ``export_date``).  The export types the ``*_count`` fields as strings: they
land as integers, and a value that is not one is quarantined, never zeroed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chat_ingest.sources.values import NO_DATE_MARK
from chat_ingest.tablespec import MARK_COLUMNS, TENANT_MAX_BYTES, Column, MergeRule, TableSpec

if TYPE_CHECKING:
    from psycopg import sql

SOURCE = "ultimate"

CHANNELS = ("chat", "ticket")
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
    Column("bot_id", "text", nullable=False, keyed=True, max_bytes=TENANT_MAX_BYTES),
    Column("bot_name", "text"),
    Column("conversation_id", "text", nullable=False, keyed=True),
    Column("platform_conversation_id", "text"),
    Column("conversation_start_time", "timestamptz", nullable=False),
    Column("conversation_end_time", "timestamptz", nullable=False),
    Column("language", "text"),
    Column("channel", "text", allowed=CHANNELS),
    Column("labels", "jsonb"),
    Column("conversations_data", "jsonb", description="A JSON string in the export, parsed."),
    Column("test_mode", "boolean"),
    Column("conversation_status", "text", vocabulary=True),
    Column("last_resolution", "text", vocabulary=True),
    Column("triggered_replies", "jsonb"),
    Column("triggered_intent_replies", "jsonb"),
    Column("is_llm_conversation", "boolean"),
    *(Column(name, "integer", value_range=(0, None)) for name in COUNT_FIELDS),
))

INTENTS = _spec("intents", description="One row per triggered intent of a conversation, in order.",
                day_column="intent_timestamp", columns=(
    Column("export_date", "date", "date", nullable=False),
    Column("bot_id", "text", nullable=False, keyed=True, max_bytes=TENANT_MAX_BYTES),
    Column("conversation_id", "text", nullable=False, keyed=True),
    Column("position", "integer", nullable=False, value_range=(0, None)),
    Column("intent_name", "text", keyed=True),
    Column("intent_timestamp", "timestamptz"),
    Column("not_meaningful", "boolean"),
))

TABLES = {spec.name: spec for spec in (CONVERSATIONS, INTENTS)}


#: The export's records of one load, as PostgreSQL reads them: a temp table of the landing
#: transaction that both tables are projected from (:func:`projection`).  ``_pre_reason`` /
#: ``_raw``: a record that could not be read, kept with its text for quarantine.
DOCUMENTS_DDL = ("CREATE TEMP TABLE _ultimate_documents (export_date date NOT NULL, doc jsonb, _pre_reason text, "
                 "_raw text) ON COMMIT DROP")
DOCUMENTS_COLUMNS = ("export_date", "doc", "_pre_reason", "_raw")


def projection(spec: TableSpec, bot: str) -> sql.Composed:
    """The rows of ``spec``'s table in ``_ultimate_documents``, as text (see ``Extraction.query``).

    A field lands as ``->>`` gives it: a string as is, ``true`` / ``false``, a number or a
    container as its JSON text (a time without a digit marked unreadable: ``now`` is no vendor's
    time, see :data:`~chat_ingest.sources.values.NO_DATE_MARK`) -- but a ``jsonb`` column takes the value as ``jsonb`` (``->``,
    the same text when cast), so a landing that types it does not print and parse it again;
    ``conversations_data`` (a JSON document inside a string) is that string, parsed when it is
    cast to ``jsonb``.  Intents are the items of
    ``triggered_intent_replies`` in order (a value that is not a list is a list of that one
    value).  The seed types the field ``string[]`` and reads ``intent.intent_name`` from each item:
    an item is an object, or a string holding one (as ``conversations_data`` holds its document);
    any other item is quarantined with its text.
    """
    from psycopg import sql

    field = sql.SQL("d.doc ->> {}").format
    marks = [sql.SQL("d._pre_reason"), sql.SQL("d._raw")]
    if spec is CONVERSATIONS:
        columns = {c.name: sql.SQL("NULLIF(d.doc -> {}, 'null')").format(sql.Literal(c.name))
                   if c.pg_type == "jsonb" and c.name != "conversations_data" else field(sql.Literal(c.name))
                   for c in spec.columns}
        # an unreadable record still says whose it was
        columns["bot_id"] = sql.SQL("CASE WHEN d.doc IS NULL THEN {} ELSE d.doc ->> 'bot_id' END").format(
            sql.Literal(bot))
        rows = sql.SQL("_ultimate_documents d")
    elif spec is INTENTS:
        item = sql.SQL("CASE WHEN jsonb_typeof(o.intent) = 'object' THEN o.intent ->> {} END").format
        columns = {"bot_id": field(sql.Literal("bot_id")), "conversation_id": field(sql.Literal("conversation_id")),
                   "position": sql.SQL("(i.n - 1)::text"),
                   **{name: item(sql.Literal(name)) for name in ("intent_name", "intent_timestamp", "not_meaningful")}}
        bad_item = sql.SQL("jsonb_typeof(o.intent) <> 'object'")
        marks = [sql.SQL("CASE WHEN {} THEN 'triggered_intent_replies: an item is not an object' END").format(bad_item),
                 sql.SQL("CASE WHEN {} THEN i.item #>> '{{}}' END").format(bad_item)]
        rows = sql.SQL(
            "_ultimate_documents d CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(d.doc -> {f}) "
            "= 'array' THEN d.doc -> {f} WHEN jsonb_typeof(d.doc -> {f}) <> 'null' THEN jsonb_build_array(d.doc -> {f}) "
            "END) WITH ORDINALITY i(item, n) CROSS JOIN LATERAL (SELECT CASE WHEN jsonb_typeof(i.item) = 'string' "
            "AND pg_input_is_valid(i.item #>> '{{}}', 'jsonb') THEN (i.item #>> '{{}}')::jsonb ELSE i.item END AS intent) o"
        ).format(f=sql.Literal("triggered_intent_replies"))
    else:
        raise ValueError(f"no projection for {spec.qualified_name}")
    for column in spec.columns:
        if column.pg_type == "timestamptz":  # the seed's times are strings: see NO_DATE_MARK
            columns[column.name] = sql.SQL("CASE WHEN {t} !~ '[0-9]' THEN {t} || {mark} ELSE {t} END").format(
                t=columns[column.name], mark=sql.Literal(NO_DATE_MARK))
    columns["export_date"] = sql.SQL("d.export_date::text")
    return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(
        [sql.SQL("{} AS {}").format(columns[name], sql.Identifier(name)) for name in spec.column_names]
        + [sql.SQL("{} AS {}").format(mark, sql.Identifier(name)) for mark, name in zip(marks, MARK_COLUMNS)]), rows)
