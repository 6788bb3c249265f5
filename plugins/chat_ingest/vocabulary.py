"""Vendor vocabulary that the seeds give as examples, not as a closed list, and what each value means.

Where a seed says "Possible values:" (Botslovers ``sender_type``, ``event``, statuses …) the column's
``allowed`` set is a hard gate.  Where it only gives examples (A8 chat ``state``, Ultimate
``conversation_status`` and ``last_resolution``) a vendor may write a value nobody here has seen, or
spell a known one differently (the Ultimate seed itself says ``bot_handled`` in one place and
``botHandled`` in another).  Such a column is mapped to meanings by ``vocabulary:`` in
``include/config/sources.yaml``; a value is matched by its *key* -- lower case, letters and digits
only -- so ``bot_handled``, ``botHandled`` and ``BOT-HANDLED`` are one value.  A value whose key is
not mapped means ``unknown``: the gate warns (it does not fail), the value and its count land in
``audit.unmapped_values`` and in the task log, and reporting counts the conversation as outcome
``unknown``.  Where the seed's examples are of a value reporting gives no meaning (A8 ``msg_type``,
Unless' log ``type`` and ``messageFormat``), the column lists them as ``Column.examples``: another value
is a gate warning with its count, and lands.

The mapping is written to ``reporting.vocabulary`` before each reporting build, and the SQL
transforms read meanings from there (``reporting.vocabulary_key`` is the same key function in SQL).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from chat_ingest.config import load_config
from chat_ingest.rules import KEY_VALUE_MAX_BYTES

#: (source, column) → the meanings reporting understands, with the seeds' own names (and the
#: names the vendors' consoles write) as defaults.  ``sources.yaml`` may add values or remap them.
DEFAULTS: dict[tuple[str, str], dict[str, str]] = {
    # A8 chat states.  `assigned` is whoever handles the chat now (the seed: "be it bot or human
    # agent"): before the chat's first transfer it is the bot, after it a human picking the chat up.
    ("a8", "state"): {
        "newChat": "new", "assignedChat": "assigned", "agentAssigned": "agent_assigned",
        "TransferChat": "transferred", "closedChat": "closed", "timeoutChat": "timed_out",
    },
    ("ultimate", "conversation_status"): {
        "botHandled": "bot_handled", "agent": "escalated", "email": "escalated",
        "customEscalation": "escalated", "failedEscalation": "failed_escalation",
    },
    ("ultimate", "last_resolution"): {
        "informed": "informed", "resolved": "resolved", "escalated": "escalated", "undefined": "undefined",
    },
}
MEANINGS: dict[tuple[str, str], frozenset[str]] = {
    field: frozenset(mapping.values()) for field, mapping in DEFAULTS.items()}
UNKNOWN = "unknown"


def value_key(value: str) -> str:
    """The form a vendor value is matched by (``reporting.vocabulary_key`` in SQL does the same)."""
    return re.sub(r"[^a-z0-9]", "", value.lower())


def mapping(source: str, column: str, config: Mapping | None = None) -> dict[str, str]:
    """``value key → meaning`` for one vocabulary column: the defaults, then ``sources.yaml``'s entries."""
    field = (source, column)
    if field not in DEFAULTS:
        raise KeyError(f"{source}.{column} has no vocabulary mapping; known: "
                       + ", ".join(f"{s}.{c}" for s, c in DEFAULTS))
    configured = ((config if config is not None else load_config()).get("vocabulary") or {}) \
        .get(source, {}).get(column, {}) or {}
    merged: dict[str, str] = {}
    for value, meaning in {**DEFAULTS[field], **configured}.items():
        if meaning not in MEANINGS[field]:
            raise ValueError(f"sources.yaml vocabulary.{source}.{column}.{value}: {meaning!r} is not a meaning "
                             f"reporting understands ({', '.join(sorted(MEANINGS[field]))})")
        if len(value_key(str(value)).encode()) > KEY_VALUE_MAX_BYTES:  # reporting.vocabulary's key holds it
            raise ValueError(f"sources.yaml vocabulary.{source}.{column}: a value over {KEY_VALUE_MAX_BYTES} bytes")
        merged[value_key(str(value))] = meaning
    return merged


def rows(config: Mapping | None = None) -> list[tuple[str, str, str, str]]:
    """Every ``(source, column, value key, meaning)``: the content of ``reporting.vocabulary``."""
    config = config if config is not None else load_config()
    return [(source, column, key, meaning) for source, column in DEFAULTS
            for key, meaning in sorted(mapping(source, column, config).items())]


def unmapped(source: str, column: str, counts: Mapping[str | None, int],
             config: Mapping | None = None) -> dict[str, int]:
    """Of ``value → count``, the non-NULL values whose key the mapping does not know."""
    known = mapping(source, column, config)
    return {value: n for value, n in counts.items() if value is not None and value_key(value) not in known}


def write_table(conn) -> None:
    """Replace ``reporting.vocabulary`` with the configured mapping (inside the caller's transaction)."""
    conn.execute("DELETE FROM reporting.vocabulary")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO reporting.vocabulary (source, column_name, value_key, meaning) "
                        "VALUES (%s, %s, %s, %s)", rows())
