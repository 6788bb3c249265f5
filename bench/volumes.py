"""Large, realistic days in the sandbox's stand-ins, for the benchmarks and the reliability tests.

Rows follow the seeds' columns and carry ≈300 bytes of message text with the
personal data real chats hold (e-mail addresses, phone numbers).  Each filler
replaces what an earlier call wrote for the same tenant, so it can be rerun.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: ≈300 bytes of message text, in ClickHouse's and PostgreSQL's spelling (``number`` / ``n`` is the row).
_MESSAGE_TEXT_CH = ("concat('Hi, my order #', toString(number % 99991), ' has not arrived; mail me at user', "
                    "toString(number % 997), '@example.com or call +34 600 ', toString(number % 999), ' 123. ', "
                    "randomPrintableASCII(200))")
_MESSAGE_TEXT_PG = ("'Hi, my order #' || mod(n, 99991) || ' has not arrived; mail me at user' || mod(n, 997) || "
                    "'@example.com or call +34 600 ' || mod(n, 999) || ' 123. ' || "
                    "substr(repeat(md5(n::text), 7), 1, 200)")


def run_sql(dsn: str, statement: str, params=()) -> list[tuple] | None:
    """One autocommitted statement; its rows, if it returns any."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else None


def s3_client(env: dict[str, str], threads: int = 16):
    """A boto3 client of the sandbox's S3 stand-in, with the Unless connection's keys, for ``threads`` threads."""
    import boto3
    from botocore.config import Config

    conn = json.loads(env["AIRFLOW_CONN_UNLESS_S3"])
    return boto3.client("s3", endpoint_url=env["SANDBOX_S3_ENDPOINT"], region_name="us-east-1",
                        config=Config(max_pool_connections=threads),
                        aws_access_key_id=conn["login"], aws_secret_access_key=conn["password"])


def fill_botslovers(env: dict[str, str], company: str, rows: int, day: dt.date) -> None:
    """``messages_<company>``: ``rows`` messages spread evenly over ``day`` (UTC)."""
    import clickhouse_connect

    from chat_ingest.sources.botslovers import MESSAGES
    from sandbox.stack import clickhouse_ddl

    port = int(env["SANDBOX_CLICKHOUSE_URL"].rsplit(":", 1)[1])
    client = clickhouse_connect.get_client(host="127.0.0.1", port=port, username="admin",
                                           password=env["SANDBOX_CLICKHOUSE_ADMIN_PASSWORD"],
                                           send_receive_timeout=1800)
    table = f"messages_{company}"
    client.command(f"DROP TABLE IF EXISTS {table}")
    client.command(clickhouse_ddl(MESSAGES, table))
    client.command(
        f"INSERT INTO {table} SELECT "
        "concat('user-', toString(number % 50000)), "
        "['user', 'bot', 'human', 'system'][number % 4 + 1], "
        "generateUUIDv4(number), "
        f"toDateTime('{day} 00:00:00', 'UTC') + intDiv(number * 86400, {rows}), "
        "['web', 'whatsapp'][number % 2 + 1], "
        "concat('session-', toString(intDiv(number, 12))), "
        "['inbound', 'outbound'][number % 2 + 1], ['inbound', 'outbound'][number % 2 + 1], "
        f"{_MESSAGE_TEXT_CH}, "
        "['es', 'en'][number % 2 + 1] "
        f"FROM numbers({rows})"
    )


def fill_a8(env: dict[str, str], bot: str, rows: int, day: dt.date) -> None:
    """A8 ``messages`` and ``chat_state`` of ``bot`` on ``day``: ``rows`` in all, half each."""
    dsn = env["AIRFLOW_CONN_A8_TIMESCALE"]
    half = rows // 2
    at = f"timestamptz '{day} 00:00:00+00' + (n * 86400.0 / {half}) * interval '1 second'"
    for table in ("messages", "chat_state"):
        run_sql(dsn, f"DELETE FROM {table} WHERE bot_handle = %s", (bot,))
    run_sql(dsn, f"""
        INSERT INTO messages (time, chat_id, mid, msg_type, reply_to_id, bot_handle, msg_from, resp_time, msg)
        SELECT {at}, 'chat-' || (n / 12), 'mid-' || n, (ARRAY['text', 'hyperlink', 'quickReply'])[mod(n, 3) + 1],
               CASE WHEN mod(n, 2) = 1 THEN 'mid-' || (n - 1) END, %s, (ARRAY['user', 'bot', 'agent'])[mod(n, 3) + 1],
               mod(n, 5000) / 1000.0, jsonb_build_object('text', {_MESSAGE_TEXT_PG}, 'lang', 'en')
        FROM generate_series(0, {half - 1}) n""", (bot,))
    run_sql(dsn, f"""
        INSERT INTO chat_state (time, chat_id, agent_id, state, custom_fields, bot_handle, id, group_id)
        SELECT {at}, 'chat-' || (n / 4), CASE WHEN mod(n, 4) >= 2 THEN 'agent-' || mod(n, 40) END,
               (ARRAY['newChat', 'TransferChat', 'agentAssigned', 'closedChat'])[mod(n, 4) + 1],
               jsonb_build_object('page', '/checkout', 'campaign', 'c' || mod(n, 30)), %s, 'state-' || n, 'sales'
        FROM generate_series(0, {half - 1}) n""", (bot,))
    run_sql(dsn, "ANALYZE messages, chat_state")


def fill_ultimate(env: dict[str, str], bot: str, conversations: int, day: dt.date) -> Path:
    """``bot``'s export file of ``day``: ``conversations`` records shaped like the generator's (a JSON array)."""
    import orjson

    path = Path(env["SANDBOX_DATASET"]) / "ultimate" / bot / f"{day}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    start = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
    with path.open("wb") as out:
        out.write(b"[")
        for n in range(conversations):
            began = start + dt.timedelta(seconds=n * 86400 / conversations)
            record = {
                "bot_id": bot, "bot_name": bot.title(), "conversation_id": f"conv-{n:08d}",
                "platform_conversation_id": f"zd-{n}", "conversation_start_time": began.isoformat(),
                "conversation_end_time": (began + dt.timedelta(minutes=4)).isoformat(), "language": "en",
                "channel": "chat", "labels": ["vip"] if n % 7 == 0 else [],
                "conversations_data": orjson.dumps({"order_id": str(n % 99991), "plan": "pro"}).decode(),
                "test_mode": False, "conversation_status": ("botHandled", "agent", "failedEscalation")[n % 3],
                "last_resolution": ("resolved", "escalated", "informed")[n % 3],
                "triggered_replies": [f"reply-{i}" for i in range(3)],
                "triggered_intent_replies": [
                    {"intent_name": name, "intent_timestamp": (began + dt.timedelta(seconds=20 * i)).isoformat(),
                     "not_meaningful": i == 0, "reply_id": f"r-{n}-{i}"}
                    for i, name in enumerate(("Greeting", "Track order", "Refund"))],
                "is_llm_conversation": n % 3 == 0, "llm_notUnderstood_count": "0",
                "llm_responseGenerated_count": "2", "llm_errorOccurred_count": "0",
                "llm_escalationRequired_count": str(n % 2), "llm_fallback_count": "0",
                "bot_messages_count": "3", "visitor_messages_count": "3", "not_understood_messages_count": "1",
            }
            out.write((b"," if n else b"") + orjson.dumps(record))
        out.write(b"]")
    return path


def fill_unless(env: dict[str, str], account: str, website: str, objects: int) -> None:
    """``objects`` conversation documents of ``website`` (8 log items each), written now by 16 threads."""
    import orjson

    client = s3_client(env)
    started_ms = int(time.time() * 1000) - 3_600_000

    def put(n: int) -> None:
        at = started_ms + n
        logs = [{"type": "message", "sender": ("user", "bot", "bot", "support")[i % 4], "timestamp": at + i * 1000,
                 "uuid": f"u-{n}-{i}", "hidden": False, "segmentId": "Track order" if i == 1 else None,
                 "messageFormat": "md", "parentId": None, "isLiveChat": i % 4 == 3,
                 "content": f"Message {i} of conversation {n}: where is order #{n % 99991}? mail user{n}@example.com"}
                for i in range(8)]
        doc = {"chatHistory": logs, "conversationName": None, "history": logs, "createdAt": at,
               "metadata": {"page": "/checkout"}, "personalizationId": f"p-{n}", "sessionId": f"s-{n // 3}",
               "startingMessageSent": True, "websiteId": website}
        key = f"{account}/conversations/{website}/s-{n // 3}/c-{n:07d}.json"
        client.put_object(Bucket=env["SANDBOX_UNLESS_BUCKET"], Key=key, Body=orjson.dumps(doc))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(objects)))
