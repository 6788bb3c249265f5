"""
### Unless → staging

Loads the Unless conversation documents of every configured website (`include/config/sources.yaml`,
`unless.bucket` / `unless.account` / `unless.websites`; connection `unless_s3`, type aws, with an
`endpoint_url` extra for MinIO or another S3-compatible store). Each conversation is one object
`<account>/conversations/<website>/<session>/<conversation>.json`, **rewritten in place** as the user
goes on chatting, so objects are selected by `LastModified`, not by creation time:

* a run reads the objects of its website modified in `[start, end)` of its window, and also
  everything modified since the website's stored watermark (`audit.watermarks`) minus a 15-minute
  overlap, so an object written while a run was listing is picked up by the next one; the first
  run reads the history;
* objects are fetched by a bounded pool of threads; each lands as

| staging table | one row per |
| --- | --- |
| `staging.unless_conversations` | conversation (ids from the key, every seed field, `metadata` as `jsonb`, `createdAt` optional, object `LastModified` and ETag) |
| `staging.unless_logs` | log item of `chatHistory` (or `history`), in order |

A conversation is upserted only when its object is newer than what staging holds, and its log items
are replaced with it, in the same transaction that advances the watermark: rerunning a window or
re-reading an unchanged object changes nothing. An object that is not JSON, is empty or lacks
`sessionId` / `chatHistory` goes to `audit.rejected_records` with its key and reason, and a key outside
the layout is reported there too; the rest of the run proceeds. The gate checks `sender`, `type`,
`messageFormat`, sane timestamps and uuids unique within a conversation.

**Manual run:** trigger with `date` = the day whose modified objects to (re)read. **Backfill:**
`airflow backfill create --dag-id unless_ingest --max-active-runs 1 --from-date 2026-11-01 --to-date 2026-11-07`.
"""  # noqa: E501 -- the DAG's docs: markdown table rows, which the UI shows unwrapped

from chat_ingest.config import source_config
from chat_ingest.dag_factory import ingest_dag
from chat_ingest.operators.unless import UnlessToStagingOperator

config = source_config("unless")

dag = ingest_dag(
    dag_id="unless_ingest",
    source="unless",
    doc_md=__doc__,
    tenant_label="websites",
    tenants=config["websites"],
    load_operator=UnlessToStagingOperator,
    pool="unless_vendor",
    tags=["s3"],
    operator_kwargs={"bucket": config["bucket"], "account": config["account"]},
)
