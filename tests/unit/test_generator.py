"""The synthetic data generator: deterministic, realistic, and bad only when asked."""

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from sandbox.generator import generate
from tests.support.sandbox import jsonl

START = dt.date(2026, 3, 1)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds")
    generate(out, seed=3, days=3, start=START, per_day=20)
    return out


def test_same_seed_same_bytes_other_seed_other_data(dataset, tmp_path):
    generate(tmp_path / "again", seed=3, days=3, start=START, per_day=20)
    generate(tmp_path / "other", seed=4, days=3, start=START, per_day=20)
    assert tree(tmp_path / "again") == tree(dataset)
    assert tree(tmp_path / "other") != tree(dataset)


def test_layout_covers_every_vendor(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    for company in manifest["botslovers"]["companies"]:
        for table in ("messages", "chat_agent_log", "agent_status_logs"):
            assert jsonl(dataset / "botslovers" / company / f"{table}.jsonl")
    assert len(list((dataset / "a8").glob("*.jsonl"))) == 11
    for bot in manifest["ultimate"]["bots"]:
        assert list((dataset / "ultimate" / bot).glob("*.json"))
    objects = list((dataset / "unless").rglob("*.json"))
    assert objects and all(len(p.relative_to(dataset / "unless").parts) == 5 for p in objects)


def test_message_text_carries_personal_data(dataset):
    texts = " ".join(m["text"] or "" for m in jsonl(dataset / "botslovers" / "acme" / "messages.jsonl"))
    assert re.search(r"[\w.]+@example\.\w+", texts)
    assert re.search(r"\+34 6\d{2} \d{3} \d{3}", texts)
    assert re.search(r"\b\d{8}\b", texts)


def test_every_outcome_and_late_data_occur(dataset):
    log = jsonl(dataset / "botslovers" / "acme" / "chat_agent_log.jsonl")
    events = {r["event"] for r in log}
    assert {"bot_assigned", "agent_joined", "resolved", "user_timeout", "agent_timeout"} <= events
    assert events & {"chat_escalated", "assigned_to_human"}
    versions: dict[str, list[dict]] = {}
    for row in log:
        versions.setdefault(row["id"], []).append(row)
    late = [v for v in versions.values()
            if len(v) == 2 and v[0]["updated_at"][:10] != v[1]["updated_at"][:10]]
    assert late, "some agent-log rows must get their second version on a later day"
    ultimate = [c for p in (dataset / "ultimate").rglob("*.json") for c in json.loads(p.read_text())]
    assert any(c["conversation_start_time"][:10] != c["conversation_end_time"][:10] for c in ultimate)
    assert {"botHandled", "failedEscalation"} <= {c["conversation_status"] for c in ultimate}
    status = jsonl(dataset / "botslovers" / "acme" / "agent_status_logs.jsonl")
    assert {"online", "offline", "ending_shift"} <= {r["new_status"] for r in status}
    assert any(r["duration_seconds"] for r in status)


def test_clean_by_default_bad_records_behind_a_flag(dataset, tmp_path):
    def bad_values(root: Path) -> int:
        count = 0
        for company in ("acme", "globex"):
            count += sum(r["sender_type"] == "robot" or r["id"] == ""
                         for r in jsonl(root / "botslovers" / company / "messages.jsonl"))
            count += sum(r["event"] == "agent_vanished"
                         for r in jsonl(root / "botslovers" / company / "chat_agent_log.jsonl"))
        return count

    assert bad_values(dataset) == 0
    generate(tmp_path, seed=3, days=3, start=START, per_day=20, bad_share=0.05)
    assert bad_values(tmp_path) > 0
    broken = 0
    for p in (tmp_path / "unless").rglob("*.json"):
        try:
            doc = json.loads(p.read_text())
            broken += "history" not in doc
        except json.JSONDecodeError:
            broken += 1
    assert broken > 0
    truncated = 0
    for p in (tmp_path / "ultimate").rglob("*.jsonl"):
        for line in p.read_text().splitlines():
            try:
                json.loads(line)
            except json.JSONDecodeError:
                truncated += 1
    assert truncated > 0


def test_the_live_ultimate_form_says_what_the_seed_form_says_in_the_v3_exports_own_shape(dataset, tmp_path):
    """Only the Ultimate files differ between the forms (same seed: the same conversations everywhere);
    the live form's records have upper-case keys, CONVERSATION_DATA, Gen3 fields, numeric counts and an
    epoch end time, and its second day is JSON Lines."""
    live = tmp_path / "live"
    generate(live, seed=3, days=3, start=START, per_day=20, ultimate_form="live")
    seed_files, live_files = tree(dataset), tree(live)
    assert {k: v for k, v in live_files.items() if not k.startswith(("ultimate/", "manifest"))} == \
        {k: v for k, v in seed_files.items() if not k.startswith(("ultimate/", "manifest"))}
    second = START + dt.timedelta(days=1)
    records = jsonl(live / "ultimate" / "ult-bank" / f"{second}.jsonl")
    seed_records = json.loads((dataset / "ultimate" / "ult-bank" / f"{second}.json").read_text())
    assert [r["CONVERSATION_ID"] for r in records] == [r["conversation_id"] for r in seed_records]
    record, seed_record = records[0], seed_records[0]
    assert record["CONVERSATION_DATA"] == seed_record["conversations_data"]
    assert all(key == key.upper() for key in record)
    assert {"AUTOMATED_RESOLUTION", "RESOLUTION_TIER", "SESSION_ENDED_TIMESTAMP", "KNOWLEDGE_SOURCES"} <= set(record)
    assert isinstance(record["CONVERSATION_END_TIME"], int)
    assert any(isinstance(r["VISITOR_MESSAGES_COUNT"], int) for r in records)
