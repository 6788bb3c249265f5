"""The ingestion DAGs' timetable: a daily data interval (each run covers the previous UTC day, as
Airflow 3's bare cron would not), with run ids that name the day a run loads.

Airflow names a run after the moment it may run (``scheduled__2026-11-29T00:00:00+00:00`` loads
2026-11-28), which an operator reading the run list takes for the day loaded.  Here the scheduled
run is ``scheduled__2026-11-28`` and a backfill's ``backfill__2026-11-28``: one run per day and
type, as Airflow allows one run per logical date anyway.  Registered by the project's plugin, so
the scheduler deserializes it.
"""

from __future__ import annotations

from airflow.timetables.interval import CronDataIntervalTimetable


class DayNamedDataIntervalTimetable(CronDataIntervalTimetable):
    """A cron data-interval timetable whose run ids name the first day of their data interval."""

    def generate_run_id(self, *, run_type, run_after, data_interval, **extra) -> str:
        if data_interval is None:  # a manual run without a logical date: Airflow's own id
            return super().generate_run_id(run_type=run_type, run_after=run_after, data_interval=data_interval,
                                           **extra)
        return run_type.generate_run_id(suffix=f"{data_interval.start.in_timezone('UTC'):%Y-%m-%d}")
