"""Names from configuration that end up in queries, object keys, HTTP headers or paths.

They are checked against an ASCII allow-list before any of those is built, so
quotes, separators, ``../`` and Unicode look-alikes are refused, not escaped.
"""

from __future__ import annotations

import re

from airflow.sdk.exceptions import AirflowFailException

from chat_ingest.rules import TENANT_MAX_BYTES

#: Names that may become part of a SQL / ClickHouse identifier (``messages_<company>``).
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,62}", re.ASCII)
#: Tenants (companies, bots, websites) and accounts: vendor ids, also used in keys and headers (ASCII:
#: characters are bytes, as many as the warehouse's index keys count on).
TENANT = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{TENANT_MAX_BYTES - 1}}}", re.ASCII)


class UnsafeIdentifierError(AirflowFailException, ValueError):
    """A configured name is not a plain identifier (refused, never retried)."""


def _check(name, pattern: re.Pattern, what: str, spelled: str) -> str:
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise UnsafeIdentifierError(f"refusing {what} {name!r}: it must match {pattern.pattern} ({spelled})")
    return name


def check_identifier(name, what: str = "name") -> str:
    return _check(name, IDENTIFIER, what, "lower-case ASCII letters, digits, '_'")


def check_tenant(name, what: str = "tenant") -> str:
    return _check(name, TENANT, what, "ASCII letters, digits, '_' and '-'")
