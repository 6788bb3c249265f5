"""How a parsed JSON value becomes the text the staging loader casts to the spec's type."""

from __future__ import annotations

import json
from typing import Any


def as_text(value: Any) -> str | None:
    """JSON for containers, lower-case for booleans, ``str`` otherwise; None stays NULL."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
