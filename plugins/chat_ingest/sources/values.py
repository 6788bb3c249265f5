"""How a parsed JSON value becomes the text the staging loader casts to the spec's type."""

from __future__ import annotations

from typing import Any

import orjson


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
