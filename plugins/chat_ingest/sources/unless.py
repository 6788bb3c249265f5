"""Unless: conversation documents in S3, rewritten in place as chats go on (seed 003).

An object ``<account>/conversations/<website>/<session>/<conversation>.json``
holds one conversation and its whole log.  The conversation is upserted by its
key when the object is newer than what staging holds (UPSERT_NEWEST on the
object's ``last_modified``); its log items are replaced together with it
(REPLACE_CHILDREN), so a re-read of an unchanged object changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

from chat_ingest.rules import EPOCH_SECONDS_BELOW, NO_DATE_MARK, TENANT_MAX_BYTES
from chat_ingest.sources.values import as_text
from chat_ingest.tablespec import Column, MergeRule, TableSpec

SOURCE = "unless"
SENDERS = ("bot", "user", "support")
#: The seed names message, error and input as examples ("e.g."); event and system are the widget's
#: status items.  Another type is a gate warning; reporting counts it as a message unless it is an error.
LOG_TYPES = ("message", "error", "input", "event", "system")
#: The seed: 'md' | 'html' | string | null: any string.  These are the values seen in the vendor's
#: widget; another is a gate warning (reporting does not read the format).
MESSAGE_FORMATS = ("md", "html", "text", "plain")
#: Document fields the seed documents (the log items are read from ``chatHistory``, or from ``history``
#: when there is none: the widget writes the same items to both); anything else lands in the
#: conversation's ``extra``: the object is rewritten in place, so a field not landed is lost for good
#: (drift is reported).
DOCUMENT_FIELDS = ("chatHistory", "conversationName", "createdAt", "history", "metadata", "personalizationId",
                   "sessionId", "startingMessageSent", "websiteId")
#: Log item fields the seed documents; anything else lands in ``extra`` (schema drift is reported, not lost).
LOG_FIELDS = ("uuid", "type", "sender", "timestamp", "hidden", "historical", "local", "segmentId",
              "messageFormat", "parentId", "isLiveChat", "content")

#: An account, website, session or conversation id: ASCII only, so quotes, separators, ``../`` and
#: Unicode look-alikes never become part of a key or prefix.
ID = r"[A-Za-z0-9_-]{1,128}"
KEY_PATTERN = re.compile(
    rf"^(?P<account>{ID})/conversations/(?P<website>{ID})/(?P<session>{ID})/(?P<conversation>{ID})\.json$")

_OBJECT = (
    Column("website", "text", nullable=False, description="From the object key: the tenant.", keyed=True,
           max_bytes=TENANT_MAX_BYTES),
    Column("session", "text", nullable=False, description="From the object key.", keyed=True),
    Column("conversation_id", "text", nullable=False, description="From the object key.", keyed=True),
)

CONVERSATIONS = TableSpec(
    source=SOURCE, name="conversations", tenant_column="website", tenant_in_source=True,
    merge_rule=MergeRule.UPSERT_NEWEST, version_column="last_modified", cursor="last_modified",
    day_column="started_at", key=("website", "session", "conversation_id"),
    description="One row per conversation object: the latest version landed.",
    columns=(
        *_OBJECT,
        Column("account", "text", nullable=False, description="From the object key."),
        Column("object_key", "text", nullable=False),
        Column("last_modified", "timestamptz", nullable=False, description="The object's LastModified."),
        Column("etag", "text"),
        Column("conversation_name", "text"),
        Column("created_at", "timestamptz",
               description="createdAt (epoch ms or s); absent on old data, says the seed."),
        Column("started_at", "timestamptz",
               description="createdAt, or the first log item's time when createdAt is absent."),
        Column("metadata", "jsonb"),
        Column("personalization_id", "text"),
        Column("session_id", "text", description="sessionId as the document states it."),
        Column("starting_message_sent", "boolean"),
        Column("website_id", "text", description="websiteId as the document states it."),
        Column("history_field", "text", allowed=("chatHistory", "history"),
               description="Which array the log items were read from."),
        Column("log_items", "integer", nullable=False, value_range=(0, None)),
        Column("extra", "jsonb", description="Document fields the seed does not document, as they came."),
    ),
)

LOGS = TableSpec(
    source=SOURCE, name="logs", tenant_column="website", tenant_in_source=True,
    merge_rule=MergeRule.REPLACE_CHILDREN, parent_key=("website", "session", "conversation_id"),
    version_column="last_modified", cursor="last_modified", day_column="logged_at",
    key=("website", "session", "conversation_id", "position"),
    unique_together=(("website", "session", "conversation_id", "uuid"),),
    description="One row per log item of a conversation's chatHistory (or history), in order.",
    columns=(
        *_OBJECT,
        Column("position", "integer", nullable=False, value_range=(0, None)),
        Column("last_modified", "timestamptz", nullable=False, description="The object's LastModified."),
        Column("uuid", "text", nullable=False, keyed=True),
        Column("type", "text", examples=LOG_TYPES),
        Column("sender", "text", allowed=SENDERS),
        Column("logged_at", "timestamptz", description="timestamp (epoch ms or s)."),
        Column("hidden", "boolean"),
        Column("historical", "boolean"),
        Column("local", "boolean"),
        Column("segment_id", "text", keyed=True),
        Column("message_format", "text", examples=MESSAGE_FORMATS),
        Column("parent_id", "text"),
        Column("is_live_chat", "boolean"),
        Column("content", "text"),
        Column("extra", "jsonb", description="Fields the seed does not document, as they came."),
    ),
)

TABLES = {spec.name: spec for spec in (CONVERSATIONS, LOGS)}


@dataclass(frozen=True)
class ObjectRef:
    """A listed conversation object."""

    key: str
    last_modified: dt.datetime
    etag: str | None
    size: int


def parse_key(key: str) -> dict[str, str] | None:
    """The ids an object key carries, or None when the key does not follow the documented layout."""
    match = KEY_PATTERN.match(key)
    return match.groupdict() if match else None


#: The seed types ``timestamp`` and ``createdAt`` "number" and names no unit; the widget writes epoch
#: milliseconds, older data seconds (see EPOCH_SECONDS_BELOW).
_EPOCH_TEXT = re.compile(r"\s*-?[0-9]+(\.[0-9]+)?\s*")
_DIGIT = re.compile("[0-9]")


def epoch_time(value: Any) -> dt.datetime | str | None:
    """An epoch number (milliseconds, or seconds: :data:`~chat_ingest.rules.EPOCH_SECONDS_BELOW`), a
    string of one or
    an ISO 8601 string (UTC when it names no offset) as a UTC time; any other value as its text,
    which the loader quarantines with its reason unless PostgreSQL reads it as a timestamp (a text
    without a digit is marked unreadable: :data:`~chat_ingest.rules.NO_DATE_MARK`)."""
    if value is None:
        return None
    if isinstance(value, str):
        if not _EPOCH_TEXT.fullmatch(value):
            try:
                parsed = dt.datetime.fromisoformat(value.strip())
            except ValueError:
                return value if _DIGIT.search(value) else value + NO_DATE_MARK
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
        value = float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = value if abs(value) < EPOCH_SECONDS_BELOW else value / 1000
            return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
        except (OverflowError, OSError, ValueError):  # NaN, or beyond the calendar
            return f"epoch {value!r} (out of range)"
    return str(value)


def _iso(value: dt.datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else value


class BadDocument(ValueError):
    """An object that cannot land: not JSON, empty, or missing what every conversation has."""


def document_rows(ref: ObjectRef, ids: dict[str, str], doc: Any) -> tuple[dict, list[dict]]:
    """The conversation row and its log rows, or :class:`BadDocument` saying why not.  A row's
    ``extra`` is a dict of the fields the seed does not document (None: there are none), which the
    spool writes as JSON and counts as drift."""
    if not isinstance(doc, dict):
        raise BadDocument(f"a JSON {type(doc).__name__}, not an object")
    if not doc:
        raise BadDocument("an empty JSON object")
    field = "chatHistory" if "chatHistory" in doc else "history" if "history" in doc else None
    missing = [name for name, present in (("chatHistory or history", field), ("sessionId", "sessionId" in doc))
               if not present]
    if missing:
        raise BadDocument(f"lacks required field(s): {', '.join(missing)}")
    items = doc[field]
    if not isinstance(items, list):
        raise BadDocument(f"{field} is a {type(items).__name__}, not an array")
    last_modified = ref.last_modified.isoformat()
    common = {"website": ids["website"], "session": ids["session"], "conversation_id": ids["conversation"],
              "last_modified": last_modified}
    logs = []
    first_log = None
    for position, item in enumerate(items):
        row = {**common, "position": str(position)}
        if not isinstance(item, dict):
            row.update(_pre_reason=f"{field}[{position}]: a JSON {type(item).__name__}, not a log object",
                       _raw=as_text(item))
        else:
            extra = {k: v for k, v in item.items() if k not in LOG_FIELDS} or None
            content = item.get("content")
            logged_at = epoch_time(item.get("timestamp"))
            if isinstance(logged_at, dt.datetime) and (first_log is None or logged_at < first_log):
                first_log = logged_at
            row.update(
                uuid=as_text(item.get("uuid")), type=as_text(item.get("type")), sender=as_text(item.get("sender")),
                logged_at=_iso(logged_at), hidden=as_text(item.get("hidden")),
                historical=as_text(item.get("historical")), local=as_text(item.get("local")),
                segment_id=as_text(item.get("segmentId")), message_format=as_text(item.get("messageFormat")),
                parent_id=as_text(item.get("parentId")), is_live_chat=as_text(item.get("isLiveChat")),
                content=content if isinstance(content, str) or content is None else json.dumps(content),
                extra=extra,
            )
        logs.append(row)
    created = _iso(epoch_time(doc.get("createdAt")))
    conversation = {
        **common, "account": ids["account"], "object_key": ref.key, "etag": ref.etag,
        "conversation_name": as_text(doc.get("conversationName")), "created_at": created,
        "started_at": created or _iso(first_log), "metadata": as_text(doc.get("metadata")),
        "personalization_id": as_text(doc.get("personalizationId")), "session_id": as_text(doc.get("sessionId")),
        "starting_message_sent": as_text(doc.get("startingMessageSent")), "website_id": as_text(doc.get("websiteId")),
        "history_field": field, "log_items": str(len(items)),
        "extra": {k: v for k, v in doc.items() if k not in DOCUMENT_FIELDS} or None,
    }
    return conversation, logs
