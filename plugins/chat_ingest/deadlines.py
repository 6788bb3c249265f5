"""The deadline reference of late-data alerts: the end of a scheduled run's day.

A daily run covers the previous day, so "the day's data has landed by 06:00" is
this reference plus six hours.  Manual runs and backfills get no deadline: they
load days already past, whose deadline would be missed the moment they start.
Registered with Airflow by chat_ingest.plugin (the scheduler evaluates it).
"""

from __future__ import annotations

from airflow.sdk.definitions.deadline import BaseDeadlineReference, deadline_reference


@deadline_reference
class ScheduledDayEnd(BaseDeadlineReference):
    """``data_interval_end`` of a scheduled run; None (no deadline) for any other run."""

    required_kwargs = {"dag_id", "run_id"}

    def _evaluate_with(self, *, session, dag_id: str, run_id: str):
        from airflow.models import DagRun
        from sqlalchemy import select

        row = session.execute(select(DagRun.run_type, DagRun.data_interval_end).where(
            DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one_or_none()
        return row.data_interval_end if row is not None and row.run_type == "scheduled" else None
