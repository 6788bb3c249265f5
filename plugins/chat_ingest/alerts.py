"""Alerts, configured under ``alerts`` in sources.yaml: where they go, and when data counts as late.

* a failed DAG run sends one message to every target;
* ``landed_by`` (UTC "HH:MM"): a scheduled ingestion run whose day has not landed
  successfully by that time on the next day raises a deadline alert (an Airflow
  DeadlineAlert run by the triggerer), also when the run is merely slow or stuck.

Called while DAG files are parsed, so the providers behind the notifiers (and
aiohttp) are imported only when a target is configured.
"""

from __future__ import annotations

import datetime as dt
import re


def _alerts_config() -> dict:
    from chat_ingest.config import load_config

    return load_config().get("alerts") or {}


def alert_targets(alerts: dict) -> dict:
    """``http_conn_id`` (chat webhook), ``smtp_conn_id`` + ``email_to`` + ``email_from`` (e-mail)."""
    return {"http_conn_id": alerts.get("http_conn_id"), "smtp_conn_id": alerts.get("smtp_conn_id"),
            "email_to": alerts.get("email_to") or [], "email_from": alerts.get("email_from")}


def _configured(targets: dict) -> bool:
    return bool(targets["http_conn_id"] or targets["smtp_conn_id"])


def failure_alerts() -> list:
    """The DAG-level failure notifiers (none when no target is configured)."""
    targets = alert_targets(_alerts_config())
    if not _configured(targets):
        return []
    from chat_ingest.notifiers import notifiers_for

    return notifiers_for(targets)


def landed_by_offset(value: str) -> dt.timedelta:
    """``"HH:MM"`` (UTC, on the day after the data's day) as the time after that day's end."""
    match = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", str(value))
    if not match:
        raise ValueError(f"alerts.landed_by must be a UTC time HH:MM, got {value!r}")
    return dt.timedelta(hours=int(match[1]), minutes=int(match[2]))


def landing_deadline():
    """The ingestion DAGs' deadline alert, or None (no ``landed_by`` or no target)."""
    alerts = _alerts_config()
    landed_by, targets = alerts.get("landed_by"), alert_targets(alerts)
    if not landed_by or not _configured(targets):
        return None
    from airflow.sdk import AsyncCallback, DeadlineAlert

    from chat_ingest.deadlines import ScheduledDayEnd

    return DeadlineAlert(reference=ScheduledDayEnd(), interval=landed_by_offset(landed_by),
                         callback=AsyncCallback("chat_ingest.notifiers.notify_deadline_missed", kwargs=targets),
                         name="previous day landed")
