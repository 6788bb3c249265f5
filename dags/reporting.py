"""
### Reporting: vendor-neutral tables from all four sources

Runs whenever an ingestion DAG's validation passes (scheduled on the `staging.*` Assets), and
rebuilds exactly the (source, day) partitions those loads changed — recorded by every load in
`audit.changed_days`, each widened by the day before it (conversations that began the evening
before) and the day after it (agent intervals running into it); a conversation whose start moved is
taken out of its old day. A day of a source is rebuilt in **one transaction** from the SQL in
`include/sql/reporting/`:

| table | one row per |
| --- | --- |
| `reporting.conversations` | conversation of any source: outcome, intents, message counts, HMAC'd user key |
| `reporting.messages` | message, with e-mail addresses, phone and ID numbers masked |
| `reporting.daily_bot_kpis` | day × source × tenant: bot-handled, escalation, failed-escalation, deflection, automation, informed, understood rates |
| `reporting.intent_metrics` | day × source × tenant × first meaningful intent |
| `reporting.agent_daily_kpis` | day × Botslovers or A8 agent: chats, handle time, first response, closes, CSAT |
| `reporting.agent_status_daily` | day × Botslovers or A8 agent × status: seconds, online share |

So Ultimate's file of day X+1, holding conversations that began on day X, rebuilds day X. A rerun
changes nothing. **Manual rebuild:** trigger with `start_date` / `end_date` to rebuild that range for
every source (e.g. after changing the SQL). The HMAC key of personal ids is the password of
connection `reporting_pii`; excluded intents are `reporting.excluded_intents` in
`include/config/sources.yaml`.
"""  # noqa: E501 -- the DAG's docs: markdown table rows, which the UI shows unwrapped

from airflow.sdk import DAG, AssetAny, Param, get_current_context, task

from chat_ingest.alerts import failure_alerts
from chat_ingest.dag_factory import START_DATE, default_args, staging_asset
from chat_ingest.project import SQL_DIR
from chat_ingest.sources import TABLES_BY_SOURCE

ASSETS = [staging_asset(spec) for tables in TABLES_BY_SOURCE.values() for spec in tables.values()]


@task
def plan() -> dict:
    """The pending changes, and the partitions to rebuild (plus a requested range, if any)."""
    from chat_ingest.reporting import plan_build
    from chat_ingest.warehouse import connect
    from chat_ingest.windows import parse_window, resolve_window

    context = get_current_context()
    params = context["params"]
    requested = parse_window(resolve_window(params, None, None)) if params.get("start_date") else None
    with connect() as conn:
        change_ids, partitions = plan_build(conn, requested, run_id=context["run_id"])
    print(f"{len(change_ids)} pending change(s); rebuilding {len(partitions)} partition(s)")
    return {"change_ids": change_ids, "partitions": [{"source": s, "day": d.isoformat()} for s, d in partitions]}


@task
def partitions_of(planned: dict) -> list[dict]:
    return planned["partitions"]


@task(max_active_tis_per_dagrun=2, map_index_template="{{ partition_label }}")
def rebuild(partition: dict) -> int:
    """One source's day in every reporting table, in one transaction (labelled "source day" in the UI)."""
    import datetime as dt

    from chat_ingest.config import load_config
    from chat_ingest.hooks.reporting_key import ReportingKeyHook
    from chat_ingest.reporting import DEFAULT_EXCLUDED_INTENTS, rebuild_day, report_lineage
    from chat_ingest.warehouse import connect

    context = get_current_context()
    context["partition_label"] = f"{partition['source']} {partition['day']}"
    excluded = load_config().get("reporting", {}).get("excluded_intents", DEFAULT_EXCLUDED_INTENTS)
    key = ReportingKeyHook().get_key()
    with connect() as conn:
        conversations = rebuild_day(conn, partition["source"], dt.date.fromisoformat(partition["day"]),
                                    pii_key=key, run_id=context["run_id"], excluded_intents=excluded)
    report_lineage(partition["source"])
    return conversations


@task
def consume(planned: dict) -> int:
    """Mark the planned changes consumed, once every partition is rebuilt."""
    from chat_ingest.reporting import mark_consumed
    from chat_ingest.warehouse import connect

    with connect() as conn:
        return mark_consumed(conn, planned["change_ids"])


with DAG(
    dag_id="reporting",
    schedule=AssetAny(*ASSETS),  # any validated staging table
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    on_failure_callback=failure_alerts(),
    tags=["chat-ingest", "reporting"],
    doc_md=__doc__,
    params={
        "start_date": Param(None, type=["null", "string"], format="date", title="Rebuild from (UTC day)",
                            description="Optional: rebuild this range for every source, beside pending changes."),
        "end_date": Param(None, type=["null", "string"], format="date", title="Rebuild to (inclusive)"),
    },
    template_searchpath=[str(SQL_DIR)],
):
    planned = plan()
    rebuild.expand(partition=partitions_of(planned)) >> consume(planned)
