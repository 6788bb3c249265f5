"""The load window of a run: ``[start, end)`` in UTC.

A scheduled run covers its data interval (the previous UTC day, from the DAG's
data-interval timetable).  A manual run names its day with the ``date`` Param, or
a range with ``start_date`` / ``end_date`` (inclusive), because a manual run's
data interval is not derived from its logical date.  A backfill run always loads its
own interval: the UI's backfill dialog shows the same form, and a day typed there must
not collapse every run of the backfill onto that day.  ``full_refresh`` travels with the
window to the sources that support it.

Params that contradict each other are a :class:`WindowParamsError`, which fails the run
at once: no retry can fix them, and retrying would hold the DAG's single active run.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

UTC = dt.timezone.utc
#: The params that name days; a backfill run ignores them.
DAY_PARAMS = ("date", "start_date", "end_date")
log = logging.getLogger(__name__)


class WindowParamsError(AirflowFailException, ValueError):
    """The run's params do not name one window; the run fails without retrying."""


def day_window(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), UTC)
    return start, start + dt.timedelta(days=1)


def window_days(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    """The UTC days a window of whole days covers, in order."""
    return [start.date() + dt.timedelta(days=i) for i in range((end.date() - start.date()).days)]


def resolve_window(params: dict[str, Any], data_interval_start, data_interval_end,
                   run_type: str | None = None, now: dt.datetime | None = None,
                   recheck_days: int = 0) -> dict[str, Any]:
    """The window as ISO strings (XCom-friendly) from the run's params or data interval.

    A scheduled run also names the ``recheck_days`` days before its window (``recheck_start``): a
    table source lands each of them again, so the rows a vendor wrote after their own run land now
    (an unchanged day is a digest comparison), and the gate checks them with the run's day.

    A window whose last day has not begun (``now``: the clock) is refused: nothing can be loaded for
    it, and a run that "loaded" 2062-11-30 for a mistyped 2026 would succeed with 0 rows.  Today
    itself may be loaded, as far as it has come; its scheduled run loads it whole.
    """
    if run_type == "backfill" and any(params.get(name) for name in DAY_PARAMS):
        log.warning("a backfill run loads its own interval: ignoring %s",
                    ", ".join(f"{name}={params[name]}" for name in DAY_PARAMS if params.get(name)))
        params = {k: v for k, v in params.items() if k not in DAY_PARAMS}
    day, first, last = params.get("date"), params.get("start_date"), params.get("end_date")
    if day and (first or last):
        raise WindowParamsError("pass either 'date' or 'start_date' / 'end_date', not both")
    if last and not first:
        raise WindowParamsError("'end_date' needs a 'start_date'")
    if day:
        start, end = day_window(dt.date.fromisoformat(str(day)))
    elif first:
        start = day_window(dt.date.fromisoformat(str(first)))[0]
        end = day_window(dt.date.fromisoformat(str(last or first)))[1]
        if end <= start:
            raise WindowParamsError(f"end_date {last} is before start_date {first}")
    elif data_interval_start is not None and data_interval_end is not None:
        start, end = _utc(data_interval_start), _utc(data_interval_end)
    else:
        raise WindowParamsError("no window: pass the 'date' param (YYYY-MM-DD) or run on a schedule")
    if end <= start:
        raise WindowParamsError(f"empty window [{start}, {end}): a bare cron schedule has no data interval; "
                         "use a data-interval timetable or pass 'date'")
    now = now or dt.datetime.now(UTC)
    last_day_starts = end - dt.timedelta(days=1)
    if last_day_starts > now:
        raise WindowParamsError(f"{last_day_starts.date()} has not begun yet (it is {now:%Y-%m-%d %H:%M} UTC): "
                                "nothing can be loaded for it")
    window = {"start": start.isoformat(), "end": end.isoformat(), "full_refresh": bool(params.get("full_refresh"))}
    if run_type == "scheduled" and recheck_days > 0:
        window["recheck_start"] = (start - dt.timedelta(days=recheck_days)).isoformat()
    return window


def _utc(moment: dt.datetime) -> dt.datetime:
    """A data interval's bound (a pendulum ``DateTime`` in a task) as a plain UTC datetime: pendulum's
    arithmetic drops a ``datetime.timezone`` it did not make (``bound - timedelta`` came out naive)."""
    return dt.datetime.fromisoformat(moment.isoformat()).astimezone(UTC)


def parse_window(window: dict[str, str]) -> tuple[dt.datetime, dt.datetime]:
    return dt.datetime.fromisoformat(window["start"]), dt.datetime.fromisoformat(window["end"])


def rechecked_days(window: dict[str, str]) -> list[tuple[dt.datetime, dt.datetime]]:
    """The days a scheduled run lands again before its window (see :func:`resolve_window`), in order."""
    if not window.get("recheck_start"):
        return []
    start = dt.datetime.fromisoformat(window["recheck_start"])
    return [day_window(day) for day in window_days(start, parse_window(window)[0])]


def checked_window(window: dict[str, str]) -> tuple[dt.datetime, dt.datetime]:
    """What the gate validates: the window and the days the run rechecked before it."""
    start, end = parse_window(window)
    return (dt.datetime.fromisoformat(window["recheck_start"]) if window.get("recheck_start") else start), end
