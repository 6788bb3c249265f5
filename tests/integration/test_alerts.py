"""Alerts: a failed run posts one webhook message and sends one e-mail; late data raises a deadline alert."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from email import message_from_bytes
from pathlib import Path

import psycopg
import pytest
import yaml

from sandbox.services import Airflow, free_port
from tests.support.sandbox import Webhook

pytestmark = pytest.mark.integration
AIRFLOW = str(Path(sys.executable).parent / "airflow")


@pytest.fixture
def mailbox():
    """A real SMTP server on loopback (aiosmtpd) keeping every message it accepts."""
    from aiosmtpd.controller import Controller

    class Keep:
        messages: list = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (the aiosmtpd API)
            self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
            return "250 OK"

    handler = Keep()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler.messages
    controller.stop()


def test_wrong_clickhouse_password_fails_fast_and_alerts_once(clean_warehouse, airflow, mailbox, tmp_path):
    sandbox = clean_warehouse
    smtp, mails = mailbox
    webhook = Webhook()
    config = yaml.safe_load((sandbox.root / "sources.yaml").read_text())
    config["alerts"] = {"http_conn_id": "chat_alerts", "smtp_conn_id": "alerts_smtp",
                        "email_to": ["oncall@example.com"], "email_from": "chat-ingest@example.com"}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(config))
    clickhouse = json.loads(sandbox.env["AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE"])
    wrong = "not-the-" + clickhouse["password"]
    cli = Airflow({**sandbox.env, "CHAT_INGEST_CONFIG": str(tmp_path / "sources.yaml"),
                   "AIRFLOW_CONN_CHAT_ALERTS": webhook.url,
                   "AIRFLOW_CONN_ALERTS_SMTP": json.dumps({
                       "conn_type": "smtp", "host": smtp.hostname, "port": smtp.port,
                       "extra": {"disable_tls": True, "disable_ssl": True, "retry_limit": 0}}),
                   "AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE": json.dumps({**clickhouse, "password": wrong})})
    try:
        with pytest.raises(RuntimeError, match="ended failed"):
            cli.trigger_day("botslovers_ingest", sandbox.days[0], tmp_path / "airflow.log")
    finally:
        webhook.shutdown()
    run_id, _ = cli.last_run_state("botslovers_ingest")
    with psycopg.connect(airflow.metadata_dsn) as conn:
        failed = conn.execute("SELECT task_id, max(try_number) FROM task_instance WHERE run_id = %s "
                              "AND state = 'failed' GROUP BY task_id", (run_id,)).fetchall()
    assert failed and all(tries == 1 for _, tries in failed), failed  # an auth error is never retried
    logs = (tmp_path / "airflow.log").read_text(errors="replace") + "".join(
        p.read_text(errors="replace") for p in (sandbox.root / "airflow" / "logs").rglob("*.log")
        if run_id.replace(":", "_") in str(p) or run_id in str(p))
    assert "authentication failed" in logs.lower()
    assert wrong not in logs and clickhouse["password"] not in logs
    assert len(webhook.received) == 1 and "botslovers_ingest" in webhook.received[0]["text"]
    assert len(mails) == 1
    recipients, mail = mails[0]
    assert recipients == ["oncall@example.com"] and "botslovers_ingest" in mail["Subject"]
    assert wrong not in mail.as_string()


def test_late_data_raises_a_deadline_alert_for_scheduled_runs_only(airflow, airflow_services):
    """landed_by 00:00: a scheduled run's deadline (its day's end) has passed before it can finish."""
    services = airflow_services
    wait = time.monotonic() + 120
    while not _latest_version_has_deadline(airflow, "a8_ingest"):  # the services' parse, not an earlier test's
        assert time.monotonic() < wait, _deadline_state(airflow, services)
        time.sleep(2)
    subprocess.run([AIRFLOW, "dags", "unpause", "a8_ingest"], env=services.env, check=True,
                   capture_output=True, timeout=120)
    try:
        deadline = time.monotonic() + 300
        while not [m for m in services.webhook.received if "a8_ingest" in m["text"] and "deadline" in m["text"]]:
            assert time.monotonic() < deadline, _deadline_state(airflow, services)
            time.sleep(2)
    finally:
        subprocess.run([AIRFLOW, "dags", "pause", "a8_ingest"], env=services.env, check=True,
                       capture_output=True, timeout=120)
    alert = next(m for m in services.webhook.received if "a8_ingest" in m["text"] and "deadline" in m["text"])
    with psycopg.connect(airflow.metadata_dsn) as conn:
        run_type, day = conn.execute("SELECT run_type, data_interval_start::date FROM dag_run WHERE dag_id = "
                                     "'a8_ingest' AND run_id = %s", (alert["run_id"],)).fetchone()
        with_deadlines = {t for (t,) in conn.execute(
            "SELECT DISTINCT r.run_type FROM deadline d JOIN dag_run r ON r.id = d.dagrun_id")}
    assert run_type == "scheduled" and f"data of {day} had not landed" in alert["text"]
    assert with_deadlines == {"scheduled"}  # manual runs and backfills load past days: no deadline


def _latest_version_has_deadline(airflow, dag_id: str) -> bool:
    with psycopg.connect(airflow.metadata_dsn) as conn:
        return bool(conn.execute(
            "SELECT 1 FROM deadline_alert a JOIN serialized_dag s ON s.id = a.serialized_dag_id "
            "JOIN dag_version v ON v.id = s.dag_version_id WHERE v.dag_id = %s AND v.version_number = "
            "(SELECT max(version_number) FROM dag_version WHERE dag_id = %s)", (dag_id, dag_id)).fetchone())


def _deadline_state(airflow, services) -> str:
    """What the metadata database and the webhook saw, for a failure message."""
    with psycopg.connect(airflow.metadata_dsn) as conn:
        runs = conn.execute("SELECT run_id, run_type, state, created_dag_version_id FROM dag_run "
                            "WHERE dag_id = 'a8_ingest'").fetchall()
        deadlines = conn.execute("SELECT dagrun_id, deadline_time, missed FROM deadline").fetchall()
        callbacks = conn.execute("SELECT state, output FROM callback").fetchall()
    return f"runs {runs}\ndeadlines {deadlines}\ncallbacks {callbacks}\nwebhook {services.webhook.received}"
