"""OpenLineage: every landing, validation and reporting task reports what it read and wrote.

Real DAG runs with the official OpenLineage provider and its file transport (the sandbox's
configuration); the test reads the emitted events and checks each task's datasets."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.integration


def events(sandbox) -> list[dict]:
    path = Path(json.loads(sandbox.env["AIRFLOW__OPENLINEAGE__TRANSPORT"])["log_file_path"])
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def completed(sandbox, dag_id: str, run_id: str) -> dict[str, list[dict]]:
    """The COMPLETE events of a run's tasks, by task id (a mapped task has one per map index)."""
    found: dict[str, list[dict]] = {}
    for event in events(sandbox):
        facets = event.get("run", {}).get("facets", {})
        airflow_run = facets.get("airflow", {}).get("dagRun", {}) or facets.get("airflow", {}).get("dag_run", {})
        job = event.get("job", {}).get("name", "")
        if event.get("eventType") == "COMPLETE" and job.startswith(f"{dag_id}.") \
                and airflow_run.get("run_id", run_id) == run_id:
            found.setdefault(job.split(".", 1)[1], []).append(event)
    return found


def names(datasets: list[dict]) -> set[tuple[str, str]]:
    return {(d["namespace"], d["name"]) for d in datasets}


def test_landing_validation_and_reporting_tasks_report_their_datasets(sandbox, airflow, tmp_path):
    warehouse = urlsplit(sandbox.warehouse_dsn)
    a8_port = urlsplit(sandbox.env["AIRFLOW_CONN_A8_TIMESCALE"]).port
    namespace = f"postgres://127.0.0.1:{warehouse.port}"
    day = sandbox.days[1]
    run_id = airflow.trigger_day("a8_ingest", day, tmp_path / "airflow.log")
    report_run = airflow.trigger("reporting", {"start_date": day.isoformat(), "end_date": day.isoformat()},
                                 tmp_path / "airflow.log")

    tasks = completed(sandbox, "a8_ingest", run_id)
    [load] = tasks["load_chat_state"][:1]
    assert names(load["inputs"]) == {(f"postgres://127.0.0.1:{a8_port}", "a8.public.chat_state")}
    assert names(load["outputs"]) == {(namespace, "chat_ingest.staging.a8_chat_state")}
    [validate] = tasks["validate_chat_state"]
    assert names(validate["inputs"]) == {(namespace, "chat_ingest.staging.a8_chat_state")}
    assertions = validate["inputs"][0]["facets"]["dataQualityAssertions"]["assertions"]
    assert assertions and all(a["success"] for a in assertions)
    assert {"expect_column_values_to_not_be_null", "expect_column_values_to_be_in_set"} <= \
        {a["assertion"] for a in assertions}

    rebuilds = completed(sandbox, "reporting", report_run)["rebuild"]
    a8_rebuild = [e for e in rebuilds if (namespace, "chat_ingest.staging.a8_chat_state") in names(e["inputs"])]
    assert a8_rebuild, [names(e["inputs"]) for e in rebuilds]
    assert {(namespace, f"chat_ingest.reporting.{t}") for t in ("conversations", "daily_bot_kpis")} \
        <= names(a8_rebuild[0]["outputs"])

    text = json.dumps(events(sandbox))
    for secret in (sandbox.env["SANDBOX_CLICKHOUSE_PASSWORD"], json.loads(
            sandbox.env["AIRFLOW_CONN_REPORTING_PII"])["password"], warehouse.password):
        assert secret not in text  # namespaces name host and port, never credentials
