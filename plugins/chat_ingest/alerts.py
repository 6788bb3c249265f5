"""Failure alerts: one chat-webhook message per failed DAG run, configured under ``alerts``.

Called while DAG files are parsed, so the http provider (and aiohttp behind it) is
imported only when alerts are configured.
"""

from __future__ import annotations


def failure_alerts() -> list:
    """The DAG-level failure notifiers configured under ``alerts.http_conn_id`` (none when unset)."""
    from chat_ingest.config import load_config

    conn_id = (load_config().get("alerts") or {}).get("http_conn_id")
    if not conn_id:
        return []
    from chat_ingest.notifiers import RunFailureNotifier

    return [RunFailureNotifier(http_conn_id=conn_id)]
