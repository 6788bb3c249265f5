"""``make bench``'s floor: the real DAGs with no task working on data, for what Airflow itself costs.

The floor's Airflow services run with :data:`SETTINGS` on their ``PYTHONPATH``, whose
``airflow_local_settings`` installs :func:`task_policy`: Airflow applies it to every task of every DAG it
parses, in the dag-processor and in each task's own process.  The DAGs keep their task ids, mapping,
pools and outlets; a validation does nothing, a landing reads nothing and lands nothing but notes its
window's days as changed for each tenant and table (as a first load of the window does), and a
reporting rebuild does nothing, so the reporting runs the landings trigger map a ``rebuild`` per
partition, as a real run's do.  Production code knows nothing of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The folder whose ``airflow_local_settings.py`` installs :func:`task_policy`.
SETTINGS = Path(__file__).with_name("floor_settings")


def task_policy(task) -> None:
    """Make ``task`` (a mapped task, or one task) do no work: see the module's docstring."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    from chat_ingest.operators.load import LandingOperator
    from chat_ingest.operators.validate import ValidateStagingOperator

    mapped = isinstance(task, MappedOperator)
    cls = task.operator_class if mapped else type(task)
    if isinstance(cls, type) and issubclass(cls, (LandingOperator, ValidateStagingOperator)):
        if mapped:
            task.operator_class = noop_twin(cls)
        else:
            task.__class__ = noop_twin(cls)
    elif task.dag_id == "reporting" and task.task_id == "rebuild":
        task.python_callable = _rebuild_nothing


def noop_twin(operator: type) -> type:
    """``operator`` doing no work, under its own name (the serialized DAG is the real one's)."""
    from chat_ingest.operators.load import LandingOperator

    work = {"land": _note_window_days} if issubclass(operator, LandingOperator) else \
        {"execute": lambda self, context: None}
    return type(operator.__name__, (operator,), {**work, "__module__": operator.__module__})


def _note_window_days(self, context) -> dict[str, Any]:
    """The floor's landing: ``audit.changed_days`` of ``self.tenant``'s window, every table this task lands."""
    from chat_ingest.warehouse import connect, ensure_schema
    from chat_ingest.windows import parse_window, window_days

    days = window_days(*parse_window(self.window))
    with connect(self.warehouse_conn_id) as conn:
        ensure_schema(conn)
        conn.cursor().executemany(
            "INSERT INTO audit.changed_days (run_id, source, table_name, tenant, day) VALUES (%s, %s, %s, %s, %s)",
            [(context["run_id"], spec.source, spec.name, self.tenant, day)
             for spec in self.landed_specs for day in days])
    return {"changed_days": [day.isoformat() for day in days]}


def _rebuild_nothing(partition: dict) -> int:
    """The floor's rebuild: labelled as the real one is ("source day" in the UI), no work."""
    from airflow.sdk import get_current_context

    get_current_context()["partition_label"] = f"{partition['source']} {partition['day']}"
    return 0
