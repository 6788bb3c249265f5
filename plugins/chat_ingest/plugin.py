"""The project's Airflow plugin: the ingestion DAGs' timetable (run ids naming the day they load), the
late-data deadline reference (evaluated by the scheduler), the
validation task's GX Data Docs link (resolved by the api-server for serialized DAGs), and the Data Docs
site itself, served under the api-server behind its login, with a "GX Data Docs" entry in the UI's menu."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from chat_ingest.data_docs import URL_PREFIX, DataDocsApp
from chat_ingest.deadlines import ScheduledDayEnd
from chat_ingest.operators.validate import DataDocsLink
from chat_ingest.timetables import DayNamedDataIntervalTimetable


class ChatIngestPlugin(AirflowPlugin):
    name = "chat_ingest"
    deadline_references = [ScheduledDayEnd]
    operator_extra_links = [DataDocsLink()]
    timetables = [DayNamedDataIntervalTimetable]
    fastapi_apps = [{"app": DataDocsApp(), "url_prefix": URL_PREFIX, "name": "GX Data Docs"}]
    external_views = [{"name": "GX Data Docs", "href": f"{URL_PREFIX}/index.html", "destination": "nav",
                       "category": "browse"}]
