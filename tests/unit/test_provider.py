"""The project registers its connection type with Airflow, so the UI shows a proper form."""

from __future__ import annotations

import warnings


def test_ultimate_export_connection_type_is_registered_with_its_fields():
    from airflow.providers_manager import ProvidersManager

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manager = ProvidersManager()
        hook = manager.hooks.get("ultimate_export")
        widgets = {w.field_name: w for w in manager.connection_form_widgets.values()
                   if w.package_name == "chat-ingest"}
        behaviour = manager.field_behaviours.get("ultimate_export")
    assert hook is not None, "chat-ingest is not installed as a provider (make installs it with pip -e .)"
    assert hook.hook_class_name == "chat_ingest.hooks.ultimate.UltimateExportHook"
    assert hook.connection_testable
    assert set(widgets) == {"organization_id", "bot_id", "api_version"}
    assert behaviour["relabeling"]["password"] == "API token"


def test_the_fields_are_headers_only_where_the_api_wants_them(monkeypatch):
    """organization_id becomes the `organizationid` header; the fields themselves are never sent."""
    import json

    from chat_ingest.hooks.ultimate import UltimateExportHook

    monkeypatch.setenv("AIRFLOW_CONN_ULTIMATE_TEST", json.dumps({
        "conn_type": "ultimate_export", "host": "api.example.com", "schema": "https", "password": "t0ken",
        "extra": {"organization_id": "org-1", "bot_id": "bot-1", "timeout": 5}}))
    session = UltimateExportHook("ultimate_test")._api()
    sent = {k.lower(): v for k, v in session.headers.items()}
    assert sent["organizationid"] == "org-1" and sent["authorization"] == "t0ken"
    assert "organization_id" not in sent and "bot_id" not in sent and "timeout" not in sent
