"""A wrong ClickHouse password: the run fails at once (no retries) saying why, and one alert is sent."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
import yaml

from sandbox.demo import Airflow

pytestmark = pytest.mark.integration


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (the http.server API)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):  # keep the test output clean
        pass


def test_wrong_clickhouse_password_fails_fast_and_alerts_once(clean_warehouse, airflow, tmp_path):
    sandbox = clean_warehouse
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = yaml.safe_load((sandbox.root / "sources.yaml").read_text())
    config["alerts"] = {"http_conn_id": "chat_alerts"}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(config))
    clickhouse = json.loads(sandbox.env["AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE"])
    wrong = "not-the-" + clickhouse["password"]
    cli = Airflow({**sandbox.env, "CHAT_INGEST_CONFIG": str(tmp_path / "sources.yaml"),
                   "AIRFLOW_CONN_CHAT_ALERTS": f"http://127.0.0.1:{server.server_port}",
                   "AIRFLOW_CONN_BOTSLOVERS_CLICKHOUSE": json.dumps({**clickhouse, "password": wrong})})
    try:
        with pytest.raises(RuntimeError, match="ended failed"):
            cli.trigger_day("botslovers_ingest", sandbox.days[0], tmp_path / "airflow.log")
    finally:
        server.shutdown()
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
    assert len(_Webhook.received) == 1 and "botslovers_ingest" in _Webhook.received[0]["text"]
