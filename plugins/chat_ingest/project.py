"""Where the project's non-code files live and the Airflow names it relies on.

Paths resolve from this package, so they hold in any checkout or image.  Kept
free of heavy imports: DAG files import it while they are parsed.
"""

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
INCLUDE_DIR = PROJECT_DIR / "include"
SQL_DIR = INCLUDE_DIR / "sql"
CONFIG_DIR = INCLUDE_DIR / "config"

#: The Airflow connection of the Postgres warehouse.
WAREHOUSE_CONN_ID = "chat_warehouse"

#: What every task process would import for itself, imported once by the scheduler's forkserver
#: (``[scheduler] mp_start_method = forkserver``, ``mp_forkserver_preload``): the LocalExecutor's
#: workers, and the task processes they fork, inherit them.  Great Expectations alone takes 3-4 s to
#: import, which every validate task paid (bench/README.md, validate_table).
TASK_PRELOAD_MODULES = ("airflow", "airflow.executors.local_executor", "airflow.sdk", "great_expectations",
                        "chat_ingest.dag_factory", "chat_ingest.validation", "chat_ingest.staging")


def host_name() -> str:
    """The host a task reports (``[core] hostname_callable``): ``CHAT_INGEST_HOST_NAME`` when set -- several
    Celery workers on one machine, as ``make cluster`` runs them, each named in the UI -- else the
    machine's name, as Airflow's default."""
    import os
    import socket

    return os.environ.get("CHAT_INGEST_HOST_NAME") or socket.getfqdn()
