"""How the loader reads Ultimate's records and reaches its API, without a server."""

from __future__ import annotations

import pytest

from chat_ingest.hooks.ultimate import UltimateExportError, api_base, signed_urls_endpoint
from chat_ingest.sources.ultimate import DECLARED, Fields, read_fields


def test_the_columns_own_field_names_need_no_mapping():
    assert read_fields(["bot_id", "conversation_id", "llm_notUnderstood_count", "resolution_tier"]) is None


def test_field_names_match_whatever_their_case_and_alias_and_the_rest_is_undeclared():
    fields = read_fields(["BOT_ID", "CONVERSATION_DATA", "LLM_NOTUNDERSTOOD_COUNT", "INSTANCE_ACCOUNT_ID"])
    assert fields == Fields(respell=True, undeclared=("INSTANCE_ACCOUNT_ID",), clash=None)
    assert read_fields(["bot_id", "gen4_score"]) == Fields(respell=False, undeclared=("gen4_score",), clash=None)


@pytest.mark.parametrize("names, field", [(["bot_id", "BOT_ID"], "bot_id"),
                                          (["conversations_data", "CONVERSATION_DATA"], "conversations_data")])
def test_a_record_naming_one_field_twice_cannot_land(names, field):
    assert read_fields(names).clash == f"the record names {field} twice: as {names[0]!r} and as {names[1]!r}"


def test_extra_is_not_a_field_of_the_record():
    assert "extra" not in DECLARED and "export_date" not in DECLARED
    assert read_fields(["extra"]).undeclared == ("extra",)


@pytest.mark.parametrize("host, port, schema, base", [
    ("api.ultimate.ai", None, None, "https://api.ultimate.ai"),
    ("https://api.us.ultimate.ai/", None, None, "https://api.us.ultimate.ai"),
    ("https://acme.zendesk.com/ai-agents/api", None, None, "https://acme.zendesk.com/ai-agents/api"),
    ("http://127.0.0.1/ai-agents/api", 8123, None, "http://127.0.0.1:8123/ai-agents/api"),
    ("127.0.0.1", 8123, "http", "http://127.0.0.1:8123"),
    ("http://127.0.0.1:9000/x", 8123, None, "http://127.0.0.1:9000/x"),
])
def test_the_api_base_keeps_a_path_prefix_and_puts_the_port_in_the_host(host, port, schema, base):
    assert api_base(host, port, schema) == base


def test_a_connection_without_a_host_is_refused_naming_what_it_needs():
    with pytest.raises(UltimateExportError, match="no host"):
        api_base(None, None, None)


def test_each_version_has_its_endpoint():
    assert signed_urls_endpoint("v3") == "/data-export/v3/get-signed-urls"
    assert signed_urls_endpoint("v2") == "/data-export/v2/get-signed-urls"


def test_an_unknown_api_version_is_refused_naming_the_known_ones(monkeypatch):
    import json

    from chat_ingest.hooks.ultimate import UltimateExportHook

    monkeypatch.setenv("AIRFLOW_CONN_ULTIMATE_ODD", json.dumps({
        "conn_type": "ultimate_export", "host": "api.ultimate.ai", "password": "t0ken",
        "extra": {"organization_id": "org-1", "api_version": "v4"}}))
    with pytest.raises(UltimateExportError, match="api_version 'v4' is not one of v3, v2"):
        assert UltimateExportHook("ultimate_odd").endpoint
