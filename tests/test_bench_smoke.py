"""``make bench`` from scratch, at smoke size: every benchmark runs on a fresh work folder and reports
its figures.  Speed is judged by the full ``make bench`` (bench/results.json), never here: this only
proves the command works, as a newcomer would run it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.sandbox import REPO, newcomer_env

pytestmark = pytest.mark.integration


def test_make_bench_runs_from_a_fresh_work_folder(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--runs", "1", "--work", str(tmp_path / "work"),
                           "--out", str(out)], cwd=REPO, env=newcomer_env(), capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["_meta"]["quick"] is True
    for name in ("botslovers_messages_20k", "botslovers_rerun", "a8_messages_chat_state_20k", "a8_rerun",
                 "ultimate_5k_conversations", "unless_1k_objects", "unless_rerun", "reporting_rebuild_30_days"):
        assert "met" in results[name], name
    for name in ("botslovers_messages_20k", "a8_messages_chat_state_20k", "ultimate_5k_conversations",
                 "unless_1k_objects"):
        figures = results[name]
        assert figures["rows"] > 0 and figures["seconds"] > 0 and figures["baseline"]["rows"] == figures["rows"], name
