"""The ingestion DAGs' timetable: a daily data interval (each run covers the previous UTC day, as
Airflow 3's bare cron would not), run a settling time after the day ends, with run ids that name
the day a run loads.

Airflow names a run after the moment it may run (``scheduled__2026-11-29T00:00:00+00:00`` loads
2026-11-28), which an operator reading the run list takes for the day loaded.  Here the scheduled
run is ``scheduled__2026-11-28`` and a backfill's ``backfill__2026-11-28``: one run per day and
type, as Airflow allows one run per logical date anyway.  Registered by the project's plugin, so
the scheduler deserializes it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.timetables.base import DagRunInfo
from airflow.timetables.interval import CronDataIntervalTimetable


class DayNamedDataIntervalTimetable(CronDataIntervalTimetable):
    """A cron data-interval timetable whose run ids name the first day of their data interval, and
    whose scheduled runs start ``settle`` after their interval ends.

    A vendor writes a day's last rows a little after the day ends (a pipeline's batches, a
    replica's lag): a run at midnight sharp would miss them, silently, every day.  The data
    interval stays the day; only the moment its run may start moves.
    """

    def __init__(self, cron: str, timezone: Any, *, settle: dt.timedelta = dt.timedelta(0)) -> None:
        super().__init__(cron, timezone)
        if not dt.timedelta(0) <= settle < dt.timedelta(days=1):
            raise ValueError(f"the settling time after a day must be at least 0 and under a day, got {settle}")
        self.settle = settle
        if settle:
            self.description = f"{self.description}; each run {_minutes(settle)} min after its interval ends"

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> DayNamedDataIntervalTimetable:
        import pendulum

        return cls(data["expression"], pendulum.timezone(data["timezone"]),
                   settle=dt.timedelta(seconds=data.get("settle_seconds", 0)))

    def serialize(self) -> dict[str, Any]:
        return {**super().serialize(), "settle_seconds": int(self.settle.total_seconds())}

    def next_dagrun_info(self, *, last_automated_data_interval, restriction) -> DagRunInfo | None:
        info = super().next_dagrun_info(last_automated_data_interval=last_automated_data_interval,
                                        restriction=restriction)
        if info is None or not self.settle:
            return info
        return DagRunInfo(run_after=info.run_after + self.settle, data_interval=info.data_interval,
                          partition_date=info.partition_date, partition_key=info.partition_key)

    def generate_run_id(self, *, run_type, run_after, data_interval, **extra) -> str:
        if data_interval is None:  # a manual run without a logical date: Airflow's own id
            return super().generate_run_id(run_type=run_type, run_after=run_after, data_interval=data_interval,
                                           **extra)
        return run_type.generate_run_id(suffix=f"{data_interval.start.in_timezone('UTC'):%Y-%m-%d}")


def _minutes(delta: dt.timedelta) -> int:
    return int(delta.total_seconds() // 60)
