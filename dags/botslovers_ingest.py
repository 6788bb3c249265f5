"""
### Botslovers → staging

Loads the three Botslovers ClickHouse tables of every configured company
(`include/config/sources.yaml`, `botslovers.companies`) for the previous UTC day:

| vendor table | staging table | rule |
| --- | --- | --- |
| `messages_<company>` | `staging.botslovers_messages` | immutable: dedupe and upsert by `id` |
| `chat_agent_log_<company>` | `staging.botslovers_chat_agent_log` | updated after creation: read by `updated_at` with a lookback, keep the newest version |
| `agent_status_logs_<company>` | `staging.botslovers_agent_status_logs` | immutable: dedupe and upsert by `id` |

Each load streams Arrow blocks over HTTP(S) (connection `botslovers_clickhouse`), lands
through COPY into `staging`, quarantines untypable rows in `audit.rejected_records`, and
logs to `audit.load_log`. Each table then passes the Great Expectations gate (enums from the
vendor's documentation, required values, unique ids, sane timestamps) before its Asset is
updated for the reporting DAG. Queries share the `botslovers_vendor` pool.

**Manual run:** trigger with `date` = the day to load. **Backfill:**
`airflow backfill create --dag-id botslovers_ingest --max-active-runs 1 --from-date 2026-11-01 --to-date 2026-11-07`.
"""  # noqa: E501 -- the DAG's docs: markdown table rows, which the UI shows unwrapped

import datetime as dt

from chat_ingest.config import source_config
from chat_ingest.dag_factory import ingest_dag
from chat_ingest.operators.botslovers import BotsloversToStagingOperator

config = source_config("botslovers")

dag = ingest_dag(
    dag_id="botslovers_ingest",
    source="botslovers",
    doc_md=__doc__,
    tenant_label="companies",
    tenants=config["companies"],
    load_operator=BotsloversToStagingOperator,
    pool="botslovers_vendor",
    tags=["clickhouse"],
    operator_kwargs={"agent_log_lookback": dt.timedelta(hours=config.get("agent_log_lookback_hours", 48))},
)
