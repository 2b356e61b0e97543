"""When a job runs: now, at a time, or daily at HH:MM in a time zone (``zoneinfo``, DST-aware).

A daily time that does not exist on a spring-forward day (02:30 in Europe/Berlin on the last
Sunday of March) runs at the same wall-clock offset, i.e. just after the gap (03:30), once; a time
that exists twice on a fall-back day runs at its first occurrence only. That is what cron-like
schedulers do and what an operator expects of "every night at 02:30".
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from contracts.fleet import AtSchedule, DailySchedule, Schedule

__all__ = ["first_run", "next_daily"]


def next_daily(schedule: DailySchedule, after: float) -> float:
    """The first occurrence of the daily time strictly after ``after`` (epoch seconds)."""
    zone = ZoneInfo(schedule.tz)
    hour, minute = (int(part) for part in schedule.daily.split(":"))
    local = datetime.fromtimestamp(after, zone)
    day = local.date()
    for offset in range(3):  # today, tomorrow; a third day covers a skipped local date
        candidate = datetime.combine(day + timedelta(days=offset), time(hour, minute), tzinfo=zone)
        when = candidate.astimezone(UTC).timestamp()
        if when > after:
            return when
    raise AssertionError("unreachable: a daily time occurs within three days")


def first_run(schedule: Schedule | None, now: float) -> float:
    """When a new job first runs (``now`` when it has no schedule or its time has passed)."""
    if schedule is None:
        return now
    if isinstance(schedule, AtSchedule):
        return max(now, schedule.at.timestamp())
    return next_daily(schedule, now)
