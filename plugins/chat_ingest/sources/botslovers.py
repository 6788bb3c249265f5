"""Botslovers: three ClickHouse tables per company (seed 000).

Table names on the vendor side are ``<table>_<company>``; staging holds all
companies in one table with a ``company`` column.
"""

from chat_ingest.tablespec import Column, MergeRule, TableSpec

SOURCE = "botslovers"

SENDER_TYPES = ("user", "bot", "system", "human")
CHANNELS = ("whatsapp", "web")
DIRECTIONS = ("inbound", "outbound")
AGENT_EVENTS = (
    "bot_assigned",
    "agent_timeout",
    "user_timeout",
    "agent_joined",
    "chat_escalated",
    "manual_close",
    "resolved",
    "assigned_to_human",
    "transferred",
)
AGENT_STATUSES = ("training", "offline", "break", "ending_shift", "inactive", "online")

MESSAGES = TableSpec(
    source=SOURCE,
    name="messages",
    description="Every message exchanged during conversations.",
    tenant_column="company",
    merge_rule=MergeRule.UPSERT_BY_KEY,
    key=("id",),
    cursor="created_at",
    conversation_column="session",
    columns=(
        Column("sender_id", "text", "String", nullable=False, keyed=True),
        Column("sender_type", "text", "String", nullable=False, allowed=SENDER_TYPES),
        Column("id", "text", "String", nullable=False, keyed=True),
        Column("created_at", "timestamptz", "DateTime", nullable=False),
        Column("channel", "text", "String", nullable=False, allowed=CHANNELS),
        Column("session", "text", "String", nullable=False, keyed=True),
        Column("direction", "text", "String", nullable=False, allowed=DIRECTIONS),
        Column("type", "text", "String", nullable=False, allowed=DIRECTIONS),
        Column("text", "text", "Nullable(String)", description="May hold personal data."),
        Column("language", "text", "Nullable(String)"),
    ),
)

CHAT_AGENT_LOG = TableSpec(
    source=SOURCE,
    name="chat_agent_log",
    description="Agent events during chats; rows are updated after creation (left_at, updated_at, deleted_at).",
    tenant_column="company",
    merge_rule=MergeRule.UPSERT_NEWEST,
    key=("id",),
    cursor="updated_at",
    version_column="updated_at",
    day_column="joined_at",
    span_column="left_at",
    columns=(
        Column("id", "text", "String", nullable=False, keyed=True),
        Column("chat_id", "text", "String", nullable=False, keyed=True),
        Column("agent_id", "text", "String", nullable=False, keyed=True),
        Column("joined_at", "timestamptz", "DateTime", nullable=False),
        Column("left_at", "timestamptz", "Nullable(DateTime)"),
        Column("event", "text", "String", nullable=False, allowed=AGENT_EVENTS),
        Column("response_rating", "smallint", "Nullable(Int16)", value_range=(1, 5),
               description="Customer rating of the interaction, 1 (worst) to 5 (best)."),
        Column("created_at", "timestamptz", "DateTime", nullable=False),
        Column("updated_at", "timestamptz", "DateTime", nullable=False),
        Column("deleted_at", "timestamptz", "Nullable(DateTime)"),
    ),
)

AGENT_STATUS_LOGS = TableSpec(
    source=SOURCE,
    name="agent_status_logs",
    description="History of agent status changes.",
    tenant_column="company",
    merge_rule=MergeRule.UPSERT_BY_KEY,
    key=("id",),
    cursor="status_changed_at",
    span_column="duration_seconds",
    columns=(
        Column("id", "text", "String", nullable=False, keyed=True),
        Column("agent_id", "text", "String", nullable=False, keyed=True),
        Column("old_status", "text", "String", nullable=False, allowed=AGENT_STATUSES, keyed=True),
        Column("new_status", "text", "String", nullable=False, allowed=AGENT_STATUSES, keyed=True),
        Column("status_changed_at", "timestamptz", "DateTime", nullable=False),
        Column("duration_seconds", "bigint", "Nullable(Int64)", value_range=(0, None)),
        Column("created_at", "timestamptz", "DateTime", nullable=False),
    ),
)

TABLES = {spec.name: spec for spec in (MESSAGES, CHAT_AGENT_LOG, AGENT_STATUS_LOGS)}
