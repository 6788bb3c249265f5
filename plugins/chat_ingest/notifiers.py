"""Alert notifiers: a chat webhook (HTTP connection) and e-mail (SMTP connection); see chat_ingest.alerts.

The message is built from the callback's context rather than Jinja: Airflow 3.3
runs DAG-level callbacks of ``airflow dags test`` on a serialized DAG that cannot
render templates, a deadline callback gets only a JSON summary of its run, and an
alert must not depend on how the run started.
"""

from __future__ import annotations

import html
from typing import Any

from airflow.providers.http.notifications.http import HttpNotifier
from airflow.providers.smtp.notifications.smtp import SmtpNotifier


def _field(obj: Any, name: str, default=None):
    """A run's attribute, whether the callback got a DagRun or (deadline callbacks) its JSON form."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def alert_message(context: dict) -> dict[str, str]:
    """What an alert says: ``text`` (one line), ``dag_id``, ``run_id``, ``reason``."""
    dag_run = context.get("dag_run")
    dag_id = _field(dag_run, "dag_id") or _field(context.get("dag"), "dag_id", "?")
    run_id = _field(dag_run, "run_id") or _field(dag_run, "dag_run_id") or context.get("run_id", "?")
    reason = context.get("reason") or "a task failed; see its log"
    return {"text": f"chat-ingest: {dag_id} run {run_id}: {reason}", "dag_id": dag_id, "run_id": run_id,
            "reason": reason}


class _MessageFromContext:
    template_fields = ()

    def render_template_fields(self, context, jinja_env=None) -> None:
        self.set_message(alert_message(context))


class WebhookAlert(_MessageFromContext, HttpNotifier):
    """POST ``{"text", "dag_id", "run_id", "reason"}`` to an HTTP connection (Slack / Teams / Chat webhook)."""

    def set_message(self, message: dict[str, str]) -> None:
        self.json = message


class EmailAlert(_MessageFromContext, SmtpNotifier):
    """The same message by e-mail through an SMTP connection (subject = the text)."""

    def set_message(self, message: dict[str, str]) -> None:
        self.subject = message["text"]
        self.html_content = "<p>" + "</p><p>".join(html.escape(message[k]) for k in ("text", "reason")) + "</p>"


def notifiers_for(targets: dict) -> list:
    """The notifiers for the alert targets ``chat_ingest.alerts.alert_targets`` read from the config."""
    out: list = []
    if targets.get("http_conn_id"):
        out.append(WebhookAlert(http_conn_id=targets["http_conn_id"]))
    if targets.get("smtp_conn_id"):
        out.append(EmailAlert(smtp_conn_id=targets["smtp_conn_id"], to=targets["email_to"],
                              from_email=targets["email_from"]))
    return out


async def notify_deadline_missed(context: dict, **targets) -> None:
    """The deadline alert's callback (run by the triggerer): the run's day has not landed in time."""
    dag_run = context.get("dag_run") or {}
    day = str(_field(dag_run, "data_interval_start", "?"))[:10]
    deadline = (context.get("deadline") or {}).get("deadline_time")
    context = {**context, "reason": f"the data of {day} had not landed by {deadline} (deadline alert)"}
    for notifier in notifiers_for(targets):
        notifier.render_template_fields(context)
        await notifier.async_notify(context)
