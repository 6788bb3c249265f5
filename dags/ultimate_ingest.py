"""
### Ultimate → staging

Loads the Ultimate Data Export of the previous UTC day for every configured bot
(`include/config/sources.yaml`, `ultimate.bots`; connection `ultimate_export`): the API hands out
signed URLs to the day's files, which hold the conversations that **ended** that day. Each file is
streamed record by record (JSON array or JSON lines, gzip or not) into

| staging table | one row per |
| --- | --- |
| `staging.ultimate_conversations` | conversation (`*_count` fields as integers, JSON fields as `jsonb`, `conversations_data` parsed) |
| `staging.ultimate_intents` | triggered intent of a conversation, in order |

Files are immutable, so one export date of one bot is one partition, replaced as a whole: a rerun
never duplicates a conversation. A record that does not parse, or a count that is not a number,
goes to `audit.rejected_records` with its reason. 429s (honouring `Retry-After`), 5xx and dropped
connections are retried with backoff; 400/401/403/404 are not. The vendor keeps about **30 days**:
a run for an older day fails at once, saying so. Each table passes the Great Expectations gate
(`channel`, `conversation_status`, `last_resolution`, counts ≥ 0, sane timestamps) before its Asset
is updated.

**Manual run:** trigger with `date` = the day to load. **Backfill** (within the last 30 days):
`airflow backfill create --dag-id ultimate_ingest --max-active-runs 1 --from-date 2026-11-01 --to-date 2026-11-07`.
"""  # noqa: E501 -- the DAG's docs: markdown table rows, which the UI shows unwrapped

from chat_ingest.config import source_config
from chat_ingest.dag_factory import ingest_dag
from chat_ingest.operators.ultimate import UltimateToStagingOperator

dag = ingest_dag(
    dag_id="ultimate_ingest",
    source="ultimate",
    doc_md=__doc__,
    tenant_label="bots",
    tenants=source_config("ultimate")["bots"],
    load_operator=UltimateToStagingOperator,
    pool="ultimate_vendor",
    tags=["api"],
)
