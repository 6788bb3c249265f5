"""Landing every source and building reporting as the DAGs do, and reading what reporting holds."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Collection

UTC = dt.timezone.utc


def ts(value) -> dt.datetime:
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value / 1000, UTC)
    value = value.replace("Z", "+00:00").replace(" ", "T")
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def window(sandbox, extra_days: int = 2) -> dict[str, str]:
    start = dt.datetime.combine(sandbox.days[0], dt.time(), UTC)
    end = dt.datetime.combine(sandbox.days[-1] + dt.timedelta(days=extra_days), dt.time(), UTC)
    return {"start": start.isoformat(), "end": end.isoformat()}


def land_everything(sandbox, ultimate_days=None) -> None:
    """Land all four sources over the dataset's days (and the days after, for late rows)."""
    from chat_ingest.operators.a8 import A8ToStagingOperator
    from chat_ingest.operators.botslovers import BotsloversToStagingOperator
    from chat_ingest.operators.ultimate import UltimateToStagingOperator
    from chat_ingest.operators.unless import UnlessToStagingOperator
    from chat_ingest.sources import a8

    ctx = {"run_id": f"test-{uuid.uuid4().hex[:8]}"}
    m = sandbox.manifest
    for company in m["botslovers"]["companies"]:
        for table in ("messages", "chat_agent_log", "agent_status_logs"):
            BotsloversToStagingOperator(task_id="l", tenant=company, table=table, window=window(sandbox)).execute(ctx)
    for table, spec in a8.TABLES.items():
        for bot in m["a8"]["bots"] if spec.tenant_column else [None]:
            A8ToStagingOperator(task_id="l", tenant=bot, table=table, window=window(sandbox)).execute(ctx)
    for bot in m["ultimate"]["bots"]:
        for day in ultimate_days or [*sandbox.days, sandbox.days[-1] + dt.timedelta(days=1)]:
            start = dt.datetime.combine(day, dt.time(), UTC)
            UltimateToStagingOperator(task_id="l", tenant=bot, window={
                "start": start.isoformat(), "end": (start + dt.timedelta(days=1)).isoformat()}).execute(ctx)
    # Unless selects objects by LastModified, and other suites rewrite objects in place (as the vendor
    # does): reach up to now, so a rewritten conversation is read wherever its day is.
    today = dt.datetime.now(UTC).date()
    unless_window = window(sandbox, extra_days=max(2, (today - sandbox.days[-1]).days + 1))
    for website in m["unless"]["websites"]:
        UnlessToStagingOperator(task_id="l", tenant=website, window=unless_window,
                                bucket=sandbox.env["SANDBOX_UNLESS_BUCKET"], account=m["unless"]["account"]
                                ).execute(ctx)


def build(sandbox, key: str = "test-hmac-key") -> list:
    """The reporting DAG's steps: plan the pending changes, rebuild each partition, consume."""
    from chat_ingest.reporting import mark_consumed, plan_build, rebuild_day
    from chat_ingest.warehouse import connect

    with connect() as conn:
        ids, partitions = plan_build(conn)
        for source, day in partitions:
            rebuild_day(conn, source, day, pii_key=key, run_id="test-build")
        mark_consumed(conn, ids)
    return partitions


def kpis(sandbox) -> dict:
    with sandbox.warehouse() as conn:
        rows = conn.execute("SELECT conversation_date, source, tenant, total_conversations, bot_handled_rate, "
                            "escalation_rate, failed_escalation_rate, deflection_rate, automation_rate, "
                            "informed_rate, messages_understood_rate FROM reporting.daily_bot_kpis").fetchall()
    return {(d, s, t): (n, *[None if v is None else float(v) for v in rest]) for d, s, t, n, *rest in rows}


def ultimate_records(sandbox) -> list[dict]:
    records = {}
    for bot in sandbox.manifest["ultimate"]["bots"]:
        for path in sorted((sandbox.dataset / "ultimate" / bot).glob("*.json")):
            for r in json.loads(path.read_text()):
                records[(bot, r["conversation_id"])] = r
    return list(records.values())


REPORTING_TABLES = ("conversations", "messages", "daily_bot_kpis", "intent_metrics", "agent_daily_kpis",
                    "agent_status_daily")


def fingerprint(sandbox) -> dict[str, str]:
    with sandbox.warehouse() as conn:
        return {t: conn.execute(f"SELECT count(*) || ':' || coalesce(md5(string_agg(r::text, '|' ORDER BY "
                                f"r::text)), '') FROM reporting.{t} r").fetchone()[0] for t in REPORTING_TABLES}


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), UTC)


def land_day(sandbox, day: dt.date, sources: Collection[str] = ("botslovers", "a8", "ultimate", "unless")) -> None:
    """One day of every source (or of ``sources``), as one scheduled or manual run of each ingestion DAG
    lands it."""
    from chat_ingest.operators.a8 import A8ToStagingOperator
    from chat_ingest.operators.botslovers import BotsloversToStagingOperator
    from chat_ingest.operators.ultimate import UltimateToStagingOperator
    from chat_ingest.operators.unless import UnlessToStagingOperator
    from chat_ingest.sources import a8

    one_day = {"start": midnight(day).isoformat(), "end": midnight(day + dt.timedelta(days=1)).isoformat()}
    ctx, m = {"run_id": f"day-{day}-{uuid.uuid4().hex[:6]}"}, sandbox.manifest
    if "botslovers" in sources:
        for company in m["botslovers"]["companies"]:
            for table in ("messages", "chat_agent_log", "agent_status_logs"):
                BotsloversToStagingOperator(task_id="l", tenant=company, table=table, window=one_day).execute(ctx)
    if "a8" in sources:
        for table, spec in a8.TABLES.items():
            for bot in m["a8"]["bots"] if spec.tenant_column else [None]:
                A8ToStagingOperator(task_id="l", tenant=bot, table=table, window=one_day).execute(ctx)
    if "ultimate" in sources:
        for bot in m["ultimate"]["bots"]:
            UltimateToStagingOperator(task_id="l", tenant=bot, window=one_day).execute(ctx)
    if "unless" in sources:
        for website in m["unless"]["websites"]:
            UnlessToStagingOperator(task_id="l", tenant=website, window=one_day,
                                    bucket=sandbox.env["SANDBOX_UNLESS_BUCKET"],
                                    account=m["unless"]["account"]).execute(ctx)
