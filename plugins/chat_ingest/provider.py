"""Provider metadata: registers this project's connection types with Airflow (``ultimate_export``,
``unless_s3``, ``reporting_pii``), so each has its form and its Test button.

Airflow discovers connection types through the ``apache_airflow_provider`` entry
point of an installed distribution (``pyproject.toml``; ``make`` installs the
project).  The fields are declared here, as Airflow 3.2+ wants, so the UI's
connection form shows "API token", "Organization ID" and "Bot ID" instead of a
free-form extra.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

PACKAGE = "chat-ingest"


def get_provider_info() -> dict:
    try:
        versions = [version(PACKAGE)]
    except PackageNotFoundError:  # imported from a source tree that is not installed
        versions = []
    return {
        "package-name": PACKAGE,
        "name": "chat-ingest",
        "description": "Chatbot and live-chat analytics ingestion: Botslovers, A8Chat, Ultimate, Unless.",
        "versions": versions,
        "connection-types": [
            {
                "hook-class-name": "chat_ingest.hooks.ultimate.UltimateExportHook",
                "hook-name": "Ultimate Data Export API",
                "connection-type": "ultimate_export",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "extra"],
                    "relabeling": {"host": "API base", "password": "API token"},
                    "placeholders": {"host": "https://api.ultimate.ai (EU), https://api.us.ultimate.ai (US) or "
                                             "https://<subdomain>.zendesk.com/ai-agents/api", "schema": "https"},
                },
                "conn-fields": {
                    "organization_id": {
                        "label": "Organization ID",
                        "description": "Sent as the organizationid header of every request.",
                        "schema": {"type": "string"},
                    },
                    "bot_id": {
                        "label": "Bot ID",
                        "description": "The bot test_connection asks for, and the hook's default bot; "
                                       "the DAG loads the bots listed in include/config/sources.yaml.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "api_version": {
                        "label": "API version",
                        "description": "v3: the current (enhanced Gen3) export; v2: the legacy one. Empty: v3.",
                        "schema": {"type": ["string", "null"], "enum": ["v3", "v2", None]},
                    },
                },
            },
            {
                "hook-class-name": "chat_ingest.hooks.unless.UnlessS3Hook",
                "hook-name": "Unless conversations (S3)",
                "connection-type": "unless_s3",
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "port"],
                    "relabeling": {"login": "AWS access key ID", "password": "AWS secret access key"},
                    "placeholders": {"extra": '{"endpoint_url": "https://minio.example:9000", '
                                              '"region_name": "eu-west-1"}'},
                },
            },
            {
                "hook-class-name": "chat_ingest.hooks.reporting_key.ReportingKeyHook",
                "hook-name": "Reporting HMAC key",
                "connection-type": "reporting_pii",
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "port", "login", "extra"],
                    "relabeling": {"password": "HMAC key"},
                },
            },
        ],
    }
