"""Which tenants and tables each source covers: ``include/config/sources.yaml``.

``CHAT_INGEST_CONFIG`` points at another file (the sandbox writes its own).  The
file is small and local, so reading it while a DAG file is parsed is cheap.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import yaml

from chat_ingest.project import CONFIG_DIR
from chat_ingest.settings import DEFAULT_MAX_QUARANTINED, DEFAULT_MOSTLY

DEFAULT_CONFIG = CONFIG_DIR / "sources.yaml"


def config_path() -> Path:
    return Path(os.environ.get("CHAT_INGEST_CONFIG") or DEFAULT_CONFIG)


def load_config() -> dict[str, Any]:
    """The configuration, parsed again only when the file's text changed (a validation asks for each of
    its expectations' tolerance; a task must see an edit made since the last one)."""
    path = config_path()
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"chat-ingest config not found: {path} (set CHAT_INGEST_CONFIG)") from exc
    return copy.deepcopy(_checked(text, str(path)))


@functools.lru_cache(maxsize=4)
def _checked(text: str, where: str) -> dict[str, Any]:
    """The file's settings, parsed and checked against the typed model (:mod:`chat_ingest.settings`) once
    per text."""
    from chat_ingest.settings import check

    data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of source name to settings")
    check(data, where)
    return data


def source_config(source: str) -> dict[str, Any]:
    config = load_config()
    if source not in config:
        raise KeyError(f"{config_path()}: no section for source {source!r}")
    return config[source]


def mostly_for(source: str, table: str, column: str, expectation: str) -> float:
    """The configured tolerance for one expectation (most specific key wins)."""
    validation = load_config().get("validation", {})
    overrides = validation.get("mostly", {}) or {}
    for key in (f"{source}.{table}.{column}.{expectation}", f"{source}.{table}.{column}", f"{source}.{table}",
                source):
        if key in overrides:
            return float(overrides[key])
    return float(validation.get("default_mostly", DEFAULT_MOSTLY))


def max_quarantined_for(source: str, table: str) -> float:
    """The share of a window's rows ``source.table`` may quarantine and still pass its gate (most specific
    key of ``validation.max_quarantined`` wins, then ``validation.default_max_quarantined``)."""
    validation = load_config().get("validation") or {}
    overrides = validation.get("max_quarantined") or {}
    for key in (f"{source}.{table}", source):
        if key in overrides:
            return float(overrides[key])
    return float(validation.get("default_max_quarantined", DEFAULT_MAX_QUARANTINED))
