"""The shape every ingestion DAG shares, so a source's DAG file is a few lines.

    resolve_window ───────────────────────┐
    select_tenants ─▶ batch_tenants ───────┴─▶ load_<table> (mapped over tenant batches)
                                                 ─▶ validate_<table> ──▶ Asset staging.<table>

One ``load_<table>`` task instance per tenant (one in all for a table the vendor
does not split by tenant), limited by the vendor's pool; with more tenants than
``max_load_tasks_per_table`` (sources.yaml, default 16), each task instance lands a
batch of them in turn, so Airflow's cost per task does not grow with every tenant.  A document source
(:class:`~chat_ingest.operators.load.DocumentLoadOperator`) has one ``load`` task
per tenant landing all its tables, followed by every ``validate_<table>``.  The
validation task of a table emits the table's Asset only when its batch passed,
which is what schedules the reporting DAG.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import DAG, Asset, Param, get_current_context, task

from chat_ingest.alerts import failure_alerts, landing_deadline
from chat_ingest.config import load_config
from chat_ingest.operators.load import DocumentLoadOperator, LandingOperator
from chat_ingest.operators.validate import ValidateStagingOperator
from chat_ingest.project import SQL_DIR
from chat_ingest.settings import (
    DEFAULT_MAX_LOAD_TASKS_PER_TABLE,
    DEFAULT_RECHECK_DAYS,
    DEFAULT_RETRIES,
    DEFAULT_SETTLE_MINUTES,
)
from chat_ingest.tablespec import TableSpec
from chat_ingest.timetables import DayNamedDataIntervalTimetable


def default_args() -> dict[str, Any]:
    """Every task's owner and retries, the retries as configured: how hard to retry a vendor that is
    down is the deployment's choice (a test cluster retries within seconds, production within minutes)."""
    retries = {**DEFAULT_RETRIES, **(load_config().get("retries") or {})}  # checked: chat_ingest.settings
    return {
        "owner": "chat-ingest",
        "retries": retries["attempts"],
        "retry_delay": dt.timedelta(seconds=retries["first_delay_seconds"]),
        "retry_exponential_backoff": 2.0,  # a multiplier in Airflow 3: each retry waits about twice as long
        "max_retry_delay": dt.timedelta(minutes=retries["max_delay_minutes"]),
    }


START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def daily_schedule() -> DayNamedDataIntervalTimetable:
    """Each UTC day, loaded ``settle_minutes`` after it ends: the rows a vendor writes a little late
    (a pipeline's batches, a replica's lag) are then in the run's window instead of missed for good.
    A late-data deadline (``alerts.landed_by``) before the run may even start is refused when the
    configuration is read (:mod:`chat_ingest.settings`): it would alert every day."""
    settle = load_config().get("settle_minutes", DEFAULT_SETTLE_MINUTES)
    return DayNamedDataIntervalTimetable("@daily", timezone="UTC", settle=dt.timedelta(minutes=settle))


def staging_asset(spec: TableSpec) -> Asset:
    """The Asset of a staging table, by name only: a URI scheme would make Airflow load every
    provider's URI handlers (boto3 among them) while the DAG file is parsed."""
    return Asset(name=f"staging.{spec.staging_table}")


def ingest_params(tenant_label: str, tenants: list[str], full_refresh: bool) -> dict[str, Param]:
    """The trigger form of an ingestion DAG. The tenants are a pick list of the configured ones
    (``examples`` makes the UI a multi-select) and may be left empty, which the ``null`` type allows."""
    params = {
        "date": Param(None, type=["null", "string"], format="date", title="Day to load (UTC)",
                      description="Leave empty on scheduled runs; a manual run loads exactly this day."),
        "start_date": Param(None, type=["null", "string"], format="date", title="Or: first day of a range",
                            description="A manual run may load a range of days instead of one."),
        "end_date": Param(None, type=["null", "string"], format="date", title="Last day of the range (inclusive)"),
        "tenants": Param([], type=["null", "array"], items={"type": "string", "enum": tenants},
                         examples=tenants, title=f"Only these {tenant_label}",
                         description=f"Empty: all configured {tenant_label}."),
    }
    if full_refresh:
        params["full_refresh"] = Param(False, type="boolean", title="Full refresh",
                                       description="Re-read everything the source holds, not only what changed.")
    return params


@task
def resolve_window(recheck_days: int = 0) -> dict[str, str]:
    """The run's ``[start, end)``: the ``date`` param, or the data interval (the previous UTC day; a
    backfill run's own day, whatever the form said); a scheduled run also names the
    ``recheck_days`` days before it (:func:`chat_ingest.windows.resolve_window`)."""
    from chat_ingest.windows import resolve_window as resolve

    ctx = get_current_context()
    return resolve(ctx["params"], ctx.get("data_interval_start"), ctx.get("data_interval_end"),
                   run_type=ctx["dag_run"].run_type, recheck_days=recheck_days)


def recheck_days() -> int:
    """How many days before its own a scheduled run lands again (``recheck_days``)."""
    return load_config().get("recheck_days", DEFAULT_RECHECK_DAYS)




def tenant_batches(tenants: list[str], max_tasks: int) -> list[list[str]]:
    """``tenants`` in at most ``max_tasks`` batches of equal size (one tenant each while they fit),
    in order."""
    size = max(1, -(-len(tenants) // max(1, max_tasks)))
    return [tenants[i:i + size] for i in range(0, len(tenants), size)]


@task
def select_tenants(configured: list[str]) -> list[str]:
    """The configured tenants, narrowed by the ``tenants`` param; unknown names are refused (the
    trigger form refuses them too, against the configuration the DAG was parsed with; this check
    holds against the one the run finds)."""
    wanted = get_current_context()["params"].get("tenants") or []
    unknown = sorted(set(wanted) - set(configured))
    if unknown:
        raise ValueError(f"tenants {unknown} are not configured for this source (configured: {configured})")
    return [t for t in configured if not wanted or t in wanted]


@task
def batch_tenants(selected: list[str], max_tasks: int) -> list[list[str]]:
    """The batches the loads take the selected tenants in (see :func:`tenant_batches`)."""
    return tenant_batches(selected, max_tasks)


def ingest_dag(*, dag_id: str, source: str, doc_md: str, tenant_label: str, tenants: list[str],
               load_operator: type[LandingOperator], pool: str, tags: list[str],
               operator_kwargs: dict[str, Any] | None = None) -> DAG:
    """Build the daily ingestion DAG of one source."""
    with DAG(
        dag_id=dag_id,
        schedule=daily_schedule(),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        tags=["chat-ingest", "ingestion", source, *tags],
        doc_md=doc_md,
        params=ingest_params(tenant_label, tenants, load_operator.supports_full_refresh),
        on_failure_callback=failure_alerts(),
        deadline=landing_deadline(),
        template_searchpath=[str(SQL_DIR)],
    ) as dag:
        # a source whose changed data comes back by itself (Unless: the objects rewritten since its
        # watermark) lands no day again
        window = resolve_window(recheck_days() if load_operator.lands_recheck_days else 0)
        selected = select_tenants(tenants)
        batches = batch_tenants(selected, load_config().get("max_load_tasks_per_table",
                                                                     DEFAULT_MAX_LOAD_TASKS_PER_TABLE))
        common = {"window": window, "pool": pool, **(operator_kwargs or {})}
        # the UI labels each mapped load by its tenants, not "Map Index 0": "acme", or "a … k (11)"
        by_tenant = ("{{ task.tenants[0] }}{% if task.tenants | length > 1 %} … {{ task.tenants[-1] }} "
                     "({{ task.tenants | length }}){% endif %}")
        if issubclass(load_operator, DocumentLoadOperator):  # one pass over the documents lands every table
            load_all = load_operator.partial(task_id="load", map_index_template=by_tenant, **common
                                             ).expand(tenants=batches)
            loads = {table: load_all for table in load_operator.tables}
        else:
            loads = {}
            for table, spec in load_operator.tables.items():
                if spec.tenant_column:
                    loads[table] = load_operator.partial(task_id=f"load_{table}", table=table,
                                                         map_index_template=by_tenant, **common
                                                         ).expand(tenants=batches)
                else:  # the vendor does not split this table by tenant: one load covers the whole window
                    loads[table] = load_operator(task_id=f"load_{table}", tenant=None, table=table, **common)
        for table, spec in load_operator.tables.items():
            loads[table] >> ValidateStagingOperator(
                task_id=f"validate_{table}", source=source, table=table, window=window, tenants=selected,
                outlets=[staging_asset(spec)],
            )
    return dag
