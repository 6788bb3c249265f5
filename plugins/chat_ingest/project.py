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

#: What every task process would import for itself, imported once by the process its task processes
#: are forked from, so they inherit it: Great Expectations alone takes 3-4 s to import, which every
#: validate task paid (bench/README.md, validate_table).  The LocalExecutor: the scheduler's forkserver
#: (``[scheduler] mp_start_method = forkserver`` and ``mp_forkserver_preload``, with Airflow itself);
#: a Celery worker: its main process, before it forks its pool (``[celery] extra_celery_config``,
#: Celery's ``imports``).
TASK_PRELOAD_MODULES = ("great_expectations", "chat_ingest.gx_templates", "chat_ingest.dag_factory",
                        "chat_ingest.validation", "chat_ingest.staging")
SCHEDULER_FORKSERVER_PRELOAD = ("airflow", "airflow.executors.local_executor", "airflow.sdk", *TASK_PRELOAD_MODULES)


def host_name() -> str:
    """The host a task reports (``[core] hostname_callable``): ``CHAT_INGEST_HOST_NAME`` when set -- several
    Celery workers on one machine, as ``make cluster`` runs them, each named in the UI -- else the
    machine's name, as Airflow's default."""
    import os
    import socket

    return os.environ.get("CHAT_INGEST_HOST_NAME") or socket.getfqdn()
