"""Ultimate: the Data Export API's daily files of ended conversations (seed 002).

A file holds the conversations that *ended* on its date; one export date of one bot is one
partition, replaced as a whole (REPLACE_WINDOW on ``export_date``).  The seed calls the files
immutable, but the vendor may still be building one when it is first read (a file grew from 17 to
19 records after midnight): a scheduled run reads the day before its own again, and an unchanged
file is a digest comparison.

Records land as the live export sends them, not only as the seed shows them:

* top-level field names match whatever their case (the v3 export spells them ``CONVERSATION_ID``),
  and ``conversation_data`` is ``conversations_data`` (:func:`read_fields`); a record naming one
  field twice, in two spellings, is quarantined;
* counts are numbers or strings of digits, flags booleans or their text, times ISO 8601 strings or
  epoch numbers (seconds or milliseconds); a value that is none of these is quarantined with its
  reason, never zeroed;
* the Gen3 fields with an analytic meaning are typed columns; any other field lands in ``extra``
  and is reported as drift: a day is kept 30 days, so a field not landed is lost for good.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chat_ingest.rules import EPOCH_SECONDS_BELOW, NO_DATE_MARK, TENANT_MAX_BYTES
from chat_ingest.tablespec import MARK_COLUMNS, Column, MergeRule, TableSpec

if TYPE_CHECKING:
    from psycopg import sql

SOURCE = "ultimate"

CHANNELS = ("chat", "ticket")
COUNT_FIELDS = (
    "llm_notUnderstood_count", "llm_responseGenerated_count", "llm_errorOccurred_count",
    "llm_escalationRequired_count", "llm_fallback_count", "bot_messages_count", "visitor_messages_count",
    "not_understood_messages_count",
    # Gen3: counts of the knowledge (generative) answers
    "knowledge_notUnderstood_count", "knowledge_responseGenerated_count", "knowledge_errorOccurred_count",
    "knowledge_escalationRequired_count", "knowledge_fallback_count",
)
JSON_FIELDS = ("labels", "conversations_data", "triggered_replies", "triggered_intent_replies",
               "segments", "triggered_use_cases", "triggered_procedures", "knowledge_sources")
#: Other names the export gives a field (the live v3 export: ``conversation_data``).
FIELD_ALIASES = {"conversation_data": "conversations_data"}


def _spec(name: str, columns: tuple[Column, ...], description: str, **kw) -> TableSpec:
    return TableSpec(source=SOURCE, name=name, description=description, columns=columns, tenant_column="bot_id",
                     tenant_in_source=True, merge_rule=MergeRule.REPLACE_WINDOW, cursor="export_date", **kw)


CONVERSATIONS = _spec("conversations", description="One row per conversation, in the file of the day it ended.",
                      day_column="conversation_start_time",
                      ordered_pairs=(("conversation_end_time", "conversation_start_time"),), columns=(
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
    # Gen3 fields the seed does not name (the live v3 export)
    Column("conversation_type", "text"),
    Column("resolution_tier", "text", description="Gen3: Zendesk's resolution tier of the conversation."),
    Column("automated_resolution", "boolean",
           description="Gen3: the vendor's verdict that the AI agent resolved the conversation itself."),
    Column("automated_resolution_reasoning", "text"),
    Column("rbp_status_name", "text"),
    Column("has_knowledge_response_attempt", "boolean"),
    Column("session_ended_timestamp", "timestamptz"),
    *(Column(name, "jsonb") for name in JSON_FIELDS[4:]),
    Column("extra", "jsonb", description="The record's fields no column names, as they came (reported as drift)."),
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

#: The columns that are not a field of the record: the file's date, and the fields no column names.
_NOT_FIELDS = ("export_date", "extra")
#: Every top-level field a column reads, by its spelling in lower case (aliases included).
FIELDS = {**{c.name.lower(): c.name for c in CONVERSATIONS.columns if c.name not in _NOT_FIELDS},
          **{alias.lower(): name for alias, name in FIELD_ALIASES.items()}}
#: The fields as the columns spell them.
DECLARED = frozenset(FIELDS.values())


@dataclass(frozen=True)
class Fields:
    """How a record's top-level field names differ from the columns' (see :func:`read_fields`)."""

    #: A field is spelled otherwise than its column (another case, an alias): the warehouse renames it.
    respell: bool
    #: Fields no column names: they land in ``extra`` and are reported as drift.
    undeclared: tuple[str, ...]
    #: Why the record cannot land: it names one field twice, in two spellings; else None.
    clash: str | None


def read_fields(names: Iterable[str]) -> Fields | None:
    """How a record's top-level field names map to the columns; None when they are the columns' own
    (the seed's form: one set comparison, the common case)."""
    names = tuple(names)
    if DECLARED.issuperset(names):
        return None
    seen: dict[str, str] = {}
    respell, undeclared, clash = False, [], None
    for name in names:
        field = FIELDS.get(name.lower())
        if field is None:
            undeclared.append(name)
            continue
        if field in seen and clash is None:
            clash = f"the record names {field} twice: as {seen[field]!r} and as {name!r}"
        seen[field] = name
        respell = respell or name != field
    return Fields(respell, tuple(undeclared), clash)


#: The export's records of one load, as PostgreSQL reads them: a temp table of the landing
#: transaction that both tables are projected from (:func:`projection`).  ``_pre_reason`` /
#: ``_raw``: a record that could not be read, kept with its text for quarantine; ``respell`` /
#: ``undeclared``: its field names differ from the columns' (:class:`Fields`).
DOCUMENTS_DDL = ("CREATE TEMP TABLE _ultimate_documents (export_date date NOT NULL, doc jsonb, _pre_reason text, "
                 "_raw text, respell boolean NOT NULL DEFAULT false, undeclared boolean NOT NULL DEFAULT false) "
                 "ON COMMIT DROP")
DOCUMENTS_COLUMNS = ("export_date", "doc", "_pre_reason", "_raw", "respell", "undeclared")


def respelling() -> sql.Composed:
    """The UPDATE that renames the fields of the records marked ``respell`` to the columns' spelling
    (their case, an alias), so the projection reads one name per field.  A record naming a field
    twice never gets here: it was quarantined (:func:`read_fields`)."""
    from psycopg import sql

    return sql.SQL(
        "UPDATE _ultimate_documents d SET doc = (SELECT jsonb_object_agg(coalesce(f.name, e.key), e.value) "
        "FROM jsonb_each(d.doc) e LEFT JOIN unnest({lower}::text[], {names}::text[]) f (lower_name, name) "
        "ON f.lower_name = lower(e.key)) WHERE d.respell").format(
        lower=sql.Literal(list(FIELDS)), names=sql.Literal(list(FIELDS.values())))


def projection(spec: TableSpec, bot: str) -> sql.Composed:
    """The rows of ``spec``'s table in ``_ultimate_documents``, as text (see ``Extraction.query``).

    A field lands as ``->>`` gives it: a string as is, ``true`` / ``false``, a number or a
    container as its JSON text (a time without a digit marked unreadable: ``now`` is no vendor's
    time, see :data:`~chat_ingest.rules.NO_DATE_MARK`) -- but a ``jsonb`` column takes the value as
    ``jsonb`` (``->``,
    the same text when cast), so a landing that types it does not print and parse it again;
    ``conversations_data`` (a JSON document inside a string) is that string, parsed when it is
    cast to ``jsonb``; ``extra`` is the record less every field a column reads, for a record
    that holds others.  A time that is an epoch number, or a string of one, is the time it says
    (:func:`_time`).  Intents are the items of
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
        columns["extra"] = sql.SQL("CASE WHEN d.undeclared THEN d.doc - {}::text[] END").format(
            sql.Literal(sorted(DECLARED)))
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
            "= 'array' THEN d.doc -> {f} "
            "WHEN jsonb_typeof(d.doc -> {f}) <> 'null' THEN jsonb_build_array(d.doc -> {f}) "
            "END) WITH ORDINALITY i(item, n) CROSS JOIN LATERAL (SELECT CASE WHEN jsonb_typeof(i.item) = 'string' "
            "AND pg_input_is_valid(i.item #>> '{{}}', 'jsonb') THEN (i.item #>> '{{}}')::jsonb ELSE i.item END "
            "AS intent) o"
        ).format(f=sql.Literal("triggered_intent_replies"))
    else:
        raise ValueError(f"no projection for {spec.qualified_name}")
    for column in spec.columns:
        if column.pg_type == "timestamptz":
            columns[column.name] = _time(columns[column.name])
    columns["export_date"] = sql.SQL("d.export_date::text")
    return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(
        [sql.SQL("{} AS {}").format(columns[name], sql.Identifier(name)) for name in spec.column_names]
        + [sql.SQL("{} AS {}").format(mark, sql.Identifier(name))
           for mark, name in zip(marks, MARK_COLUMNS, strict=True)]), rows)


#: An epoch number as text: digits, perhaps a fraction.  Fifteen digits at most, so that the time it
#: says (milliseconds up to the year 33658) is one PostgreSQL holds; a longer one stays text and is
#: quarantined as no valid time.
_EPOCH_TEXT = r'^\s*-?[0-9]{1,15}(\.[0-9]+)?\s*$'


def _time(text: sql.Composable) -> sql.Composed:
    """A time field's text as the loader should read it: an epoch number (seconds or milliseconds, as
    :data:`~chat_ingest.rules.EPOCH_SECONDS_BELOW` tells them apart, the rule Unless's times
    follow) as the UTC time it says; a text without a digit marked unreadable (``now`` is no vendor's
    time, :data:`~chat_ingest.rules.NO_DATE_MARK`); anything else as it is."""
    from psycopg import sql

    text = sql.SQL("({})").format(text)
    return sql.SQL(
        "CASE WHEN {t} ~ {epoch} THEN to_char(to_timestamp(CASE WHEN abs({t}::numeric) < {seconds} THEN {t}::numeric "
        "ELSE {t}::numeric / 1000 END) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.USZ') "
        "WHEN {t} !~ '[0-9]' THEN {t} || {mark} ELSE {t} END").format(
        t=text, epoch=sql.Literal(_EPOCH_TEXT), seconds=sql.Literal(EPOCH_SECONDS_BELOW),
        mark=sql.Literal(NO_DATE_MARK))
