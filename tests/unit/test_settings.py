"""sources.yaml is checked once, when it is read: a typo or a value out of range names its key."""

from __future__ import annotations

import pytest
import yaml

from chat_ingest.config import DEFAULT_CONFIG, load_config


def test_the_shipped_configuration_is_valid():
    from chat_ingest.settings import check

    check(yaml.safe_load(DEFAULT_CONFIG.read_text()), str(DEFAULT_CONFIG))


@pytest.mark.parametrize("text, says", [
    ("recheck_day: 2\n", "top level: unknown keys ['recheck_day'] (known: ['a8', 'alerts', 'botslovers'"),
    ("botslovers: {companies: [acme], lookback_hours: 4}\n",
     "botslovers: unknown keys ['lookback_hours'] (known: ['agent_log_lookback_hours', 'companies'])"),
    ("validation: {max_quarantined: {ultimate: 1.5}}\n", "validation.max_quarantined: expected a share from 0 to 1"),
    ("validation: {default_mostly: 'all'}\n", "validation.default_mostly: expected a share from 0 to 1, got 'all'"),
    ("unless: {bucket: b}\n", "unless.account: Field required"),
    ("max_load_tasks_per_table: '16'\n", "max_load_tasks_per_table: Input should be a valid integer"),
    ("alerts: {landed_by: '25:00'}\n", "alerts.landed_by: must be a UTC time HH:MM, got '25:00'"),
])
def test_a_wrong_key_or_value_fails_the_read_naming_the_key_and_what_it_allows(tmp_path, monkeypatch, text, says):
    config = tmp_path / "sources.yaml"
    config.write_text(text)
    monkeypatch.setenv("CHAT_INGEST_CONFIG", str(config))
    with pytest.raises(ValueError) as failure:
        load_config()
    assert str(failure.value).startswith(f"{config}: ") and says in str(failure.value)


def test_every_problem_of_a_file_is_named_at_once(tmp_path, monkeypatch):
    config = tmp_path / "sources.yaml"
    config.write_text("settle_minutes: -1\nrecheck_days: 9\nretries: {attempts: -2}\n")
    monkeypatch.setenv("CHAT_INGEST_CONFIG", str(config))
    with pytest.raises(ValueError) as failure:
        load_config()
    for key in ("settle_minutes: expected whole minutes", "recheck_days: expected whole days", "retries.attempts"):
        assert key in str(failure.value)
