"""The project's Airflow plugin: registers the late-data deadline reference with the scheduler."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from chat_ingest.deadlines import ScheduledDayEnd


class ChatIngestPlugin(AirflowPlugin):
    name = "chat_ingest"
    deadline_references = [ScheduledDayEnd]
