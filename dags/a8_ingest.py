"""
### A8Chat → staging

Loads the eleven A8 analytics tables (TimescaleDB, connection `a8_timescale`) for the previous UTC
day into `staging.a8_<table>`: `user`, `chat_state`, `bot_messages`, `user_message_details`,
`user_activities`, `event_metrics`, `agent_activities`, `a8bot_nlp`, `agent_sessions`,
`agent_message_details`, `messages`.

Every A8 table is a time series on `time` without reliable row ids, so each load **replaces its
window**: it deletes `[start, end)` of the bot (`bot_handle`, from `include/config/sources.yaml`,
`a8.bots`) and inserts what A8 holds, in one transaction. Tables without a bot column
(`user_message_details`, `agent_activities`, `agent_sessions`, `agent_message_details`) are loaded
whole per window.
Rows stream database to database with `COPY (SELECT …) TO STDOUT` (A8 is only read), untypable
rows go to `audit.rejected_records`, and each table passes the Great Expectations gate (`msg_from`,
chat `state`, `msg_type`, `intent_score` in [0, 1], coordinates in range, required ids, sane
timestamps) before its Asset is updated.

Staging keeps personal data raw (IP and e-mail addresses, device data, coordinates): only the
loader role may read `staging`.

**Manual run:** trigger with `date` = the day to load. **Backfill:**
`airflow backfill create --dag-id a8_ingest --max-active-runs 1 --from-date 2026-11-01 --to-date 2026-11-07`.
"""

from chat_ingest.config import source_config
from chat_ingest.dag_factory import ingest_dag
from chat_ingest.operators.a8 import A8ToStagingOperator

dag = ingest_dag(
    dag_id="a8_ingest",
    source="a8",
    doc_md=__doc__,
    tenant_label="bots",
    tenants=source_config("a8")["bots"],
    load_operator=A8ToStagingOperator,
    pool="a8_vendor",
    tags=["timescale"],
)
