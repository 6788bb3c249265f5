"""RunFailureNotifier: one chat-webhook message per failed DAG run (see chat_ingest.alerts)."""

from __future__ import annotations

from airflow.providers.http.notifications.http import HttpNotifier


class RunFailureNotifier(HttpNotifier):
    """POST ``{"text", "dag_id", "run_id", "reason"}`` to an HTTP connection (Slack / Teams / Chat webhook).

    The message is built from the callback's context rather than Jinja: Airflow 3.3
    runs DAG-level callbacks of ``airflow dags test`` on a serialized DAG that
    cannot render templates, and an alert must not depend on how the run started.
    """

    template_fields = ()

    def render_template_fields(self, context, jinja_env=None) -> None:
        dag_run = context.get("dag_run")
        dag_id = getattr(dag_run, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
        run_id = getattr(dag_run, "run_id", None) or context.get("run_id", "?")
        reason = context.get("reason") or "a task failed; see its log"
        self.json = {"text": f"chat-ingest: {dag_id} run {run_id} failed: {reason}", "dag_id": dag_id,
                     "run_id": run_id, "reason": reason}
