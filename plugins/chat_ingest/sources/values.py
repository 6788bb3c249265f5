"""How a parsed JSON value becomes the text the staging loader casts to the spec's type."""

from __future__ import annotations

from typing import Any

import orjson

#: Appended to a time given as text without a digit, so that the loader's cast refuses it and the
#: row is quarantined: PostgreSQL reads ``now``, ``today``, ``tomorrow`` and ``yesterday`` as times
#: of the load, which would land as if the vendor had said them.
NO_DATE_MARK = " (no date in it)"

#: An epoch number below this is seconds, from it on milliseconds: vendors that name no unit (Unless's
#: ``timestamp``, Ultimate's live export) write either.  Only one reading of a number can land: below
#: it, milliseconds fall before 1973, and from it on, seconds fall after the year 5138 (both quarantined,
#: before 2000-01-01 or in the future).
EPOCH_SECONDS_BELOW = 100_000_000_000


def as_text(value: Any) -> str | None:
    """JSON for containers, lower-case for booleans, ``str`` otherwise; None stays NULL.

    Called for every field of every document, so the common case (a string) returns first.
    """
    if type(value) is str:
        return value
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value, default=float).decode()  # default: a Decimal from a JSON parser
    return str(value)
