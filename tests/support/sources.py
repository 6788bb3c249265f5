"""Reaching the stand-ins as the vendors' own clients would, and landing a day of one source."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid

import psycopg

from chat_ingest.operators.botslovers import BotsloversToStagingOperator
from chat_ingest.operators.unless import UnlessToStagingOperator
from chat_ingest.windows import day_window
from tests.support.sandbox import load_window


def a8_conn(sandbox) -> psycopg.Connection:
    return psycopg.connect(sandbox.env["AIRFLOW_CONN_A8_TIMESCALE"], autocommit=True)


TEST_COMPANY = "testco"


def load_botslovers(company: str, table: str, day: dt.date, days: int = 1, run_id: str | None = None) -> dict:
    op = BotsloversToStagingOperator(task_id=f"load_{table}", tenant=company, table=table,
                                     window=load_window(day, days))
    return op.execute({"run_id": run_id or f"test-{uuid.uuid4().hex[:8]}"})


def ch_rows(sandbox, table: str, rows: list[dict]) -> None:
    """Insert rows into a stand-in table as the vendor would write them."""
    def value(v):
        return v.strftime("%Y-%m-%d %H:%M:%S") if isinstance(v, dt.datetime) else v

    body = "\n".join(json.dumps({k: value(v) for k, v in r.items()}) for r in rows)
    sandbox.clickhouse_admin().command(f"INSERT INTO {table} FORMAT JSONEachRow {body}")


def message(id_: str, at: dt.datetime, **over) -> dict:
    row = {"sender_id": "u1", "sender_type": "user", "id": id_, "created_at": at, "channel": "web",
           "session": "s1", "direction": "inbound", "type": "inbound", "text": "hello", "language": "en"}
    return {**row, **over}


def agent_log(id_: str, updated: dt.datetime, **over) -> dict:
    row = {"id": id_, "chat_id": "c1", "agent_id": "a1", "joined_at": updated, "left_at": None,
           "event": "agent_joined", "response_rating": None, "created_at": updated, "updated_at": updated,
           "deleted_at": None}
    return {**row, **over}


#: The Unless website the tests of one website use.
UNLESS_WEBSITE = "web-shop"


TODAY = dt.datetime.now(dt.timezone.utc).date()


def unless_operator(sandbox, day: dt.date = TODAY, cls=UnlessToStagingOperator, **kw) -> UnlessToStagingOperator:
    start, end = day_window(day)
    return cls(task_id="load", tenant=UNLESS_WEBSITE, window={"start": start.isoformat(), "end": end.isoformat()},
               bucket=sandbox.env["SANDBOX_UNLESS_BUCKET"], account=sandbox.manifest["unless"]["account"], **kw)


def load_unless(sandbox, day: dt.date = TODAY, run_id: str | None = None, **kw) -> dict:
    return unless_operator(sandbox, day, **kw).execute({"run_id": run_id or f"test-{uuid.uuid4().hex[:8]}"})


def unless_documents(sandbox) -> dict[str, dict]:
    root = sandbox.dataset / "unless"
    return {p.relative_to(root).as_posix(): json.loads(p.read_text())
            for p in (root / sandbox.manifest["unless"]["account"] / "conversations" / UNLESS_WEBSITE).rglob("*.json")}


@contextlib.contextmanager
def unless_objects(sandbox, bodies: dict[str, bytes]):
    """Put objects for one test; afterwards delete them, or put back the dataset's version."""
    client, bucket = sandbox.s3(), sandbox.env["SANDBOX_UNLESS_BUCKET"]
    for key, body in bodies.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    try:
        yield client
    finally:
        root = sandbox.dataset / "unless"
        for key in bodies:
            original = root / key
            if original.exists():
                client.put_object(Bucket=bucket, Key=key, Body=original.read_bytes())
            else:
                client.delete_object(Bucket=bucket, Key=key)
