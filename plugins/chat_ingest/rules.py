"""The data rules the loader and the gate both apply, each defined once: what a value may hold to land
(its size, a key's size, a time's bounds, a time given as text) and how a number becomes a time.

The loader quarantines a row that breaks one (``landing/checks.py``, and each source's extraction for
the marks), the gate fails staging rows that break them (``validation.py``), and the table specs bound
their columns by them (``tablespec.py``): a row the loader lands never fails the gate for a rule both
read here."""

from __future__ import annotations

import datetime as dt

#: No chat analytics value is larger: a bigger one is an accident or an attack, and is quarantined.
MAX_VALUE_BYTES = 8 << 20

#: The most the values of one B-tree index entry may hold together: PostgreSQL refuses an entry over
#: 2704 bytes, and with it the whole load or rebuild (headroom left for the entry's header).  The values
#: of every key are bounded so that they fit (KEY_VALUE_MAX_BYTES, TENANT_MAX_BYTES).
INDEX_ENTRY_MAX_BYTES = 2600

#: The most a value the warehouse keys or indexes rows by (``Column.keyed``: an id, a conversation, an
#: agent, an intent) may hold.  A reporting key holds up to two such values beside its source and tenant,
#: e.g. ``reporting.messages``' (source, tenant, conversation_id, message_id), and values of different
#: rows, even of different tables, meet in one entry there: only a bound on each value keeps every such
#: entry under INDEX_ENTRY_MAX_BYTES, and with it every day's rebuild from failing
#: (tests/integration/test_reporting_truth.py: ids of this size in every source, and every index's bound).
KEY_VALUE_MAX_BYTES = 1024

#: The most a tenant (a company, bot or website) may hold: a configured name (``names.TENANT``), or
#: where the source names it in its rows, a value no larger.
TENANT_MAX_BYTES = 128

#: Timestamps before this are a default or a corrupt value, not an event of a chat: the loader
#: quarantines them, and the gate, which checks what staging holds, fails them.
EARLIEST_TIMESTAMP = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)

#: Timestamps later than the load time plus this are a clock or parsing error; within it, a vendor's
#: clock running ahead.  The loader quarantines what is later, and the gate fails it against its own
#: time: one rule, so a row the loader lands never fails the gate for it.
FUTURE_TOLERANCE = dt.timedelta(days=1)


def spoken(span: dt.timedelta) -> str:
    """A span as a message says it: ``1 day``, ``10 minutes``."""
    seconds = int(span.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' * (count != 1)}"
    return str(span)


#: Appended to a time given as text without a digit, so that the loader's cast refuses it and the
#: row is quarantined: PostgreSQL reads ``now``, ``today``, ``tomorrow`` and ``yesterday`` as times
#: of the load, which would land as if the vendor had said them.
NO_DATE_MARK = " (no date in it)"

#: An epoch number below this is seconds, from it on milliseconds: vendors that name no unit (Unless's
#: ``timestamp``, Ultimate's live export) write either.  Only one reading of a number can land: below
#: it, milliseconds fall before 1973, and from it on, seconds fall after the year 5138 (both quarantined,
#: before 2000-01-01 or in the future).
EPOCH_SECONDS_BELOW = 100_000_000_000
