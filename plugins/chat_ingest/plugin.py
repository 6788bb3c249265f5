"""The project's Airflow plugin: the late-data deadline reference (evaluated by the scheduler) and the
validation task's GX Data Docs link (resolved by the api-server for serialized DAGs)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from chat_ingest.deadlines import ScheduledDayEnd
from chat_ingest.operators.validate import DataDocsLink


class ChatIngestPlugin(AirflowPlugin):
    name = "chat_ingest"
    deadline_references = [ScheduledDayEnd]
    operator_extra_links = [DataDocsLink()]
