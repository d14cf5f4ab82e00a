"""Cron and interval triggers, and which days a summary is due for.

Cron strings mean what crontab means (Sunday = 0, see config.crontab) and a job at a fixed
hour fires once on the night clocks go back (APScheduler 3 fires it twice).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from camtrap.config.crontab import crontab_fields

if TYPE_CHECKING:
    from camtrap.config.models import JobConfig

log = logging.getLogger(__name__)


# --- triggers ---------------------------------------------------------------------------


class CronOnceTrigger(CronTrigger):
    """A CronTrigger that fires a fixed-hour job once on the night clocks go back.

    APScheduler 3 fires "30 2 * * *" twice in Europe/Berlin on the last Sunday of October
    (02:30 CEST and again at 02:30 CET). Like cron, we skip the repeat when the hour field
    is fixed; an hourly-wildcard job still runs through the repeated hour in real time.
    """

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        t = super().get_next_fire_time(previous_fire_time, now)
        if self._hour_is_wildcard():
            return t
        while t is not None and _is_repeated_wall_time(t):
            t = super().get_next_fire_time(t, _just_after(t))
        return t

    def _hour_is_wildcard(self) -> bool:
        hour = next(f for f in self.fields if f.name == "hour")
        return str(hour) == "*"


def _just_after(t: datetime) -> datetime:
    """A microsecond later in real time (`t + timedelta` is wall-clock arithmetic, which
    on a repeated hour can go back an hour)."""
    return t.astimezone(UTC) + timedelta(microseconds=1)


def _is_repeated_wall_time(t: datetime) -> bool:
    """True for the second occurrence of a wall-clock time that happens twice (DST end)."""
    naive = t.replace(tzinfo=None)
    first = naive.replace(fold=0, tzinfo=t.tzinfo).utcoffset()
    second = naive.replace(fold=1, tzinfo=t.tzinfo).utcoffset()
    return (
        first != second
        and first is not None
        and second is not None
        and (t.utcoffset() == second and second < first)
    )


def cron_trigger(expr: str, tz: tzinfo | None) -> CronOnceTrigger:
    """A standard crontab line (local time of `tz`) as a trigger."""
    return CronOnceTrigger(**crontab_fields(expr), timezone=tz)


def build_trigger(job: JobConfig, tz: tzinfo, now: datetime) -> BaseTrigger | None:
    """The trigger for a job, None when switched off. Intervals count from `now` (given, so
    a test clock drives them too) and run in real time across DST changes."""
    if not job.enabled:
        return None
    if job.cron is not None:
        return cron_trigger(job.cron, tz)
    assert job.interval_min is not None
    every = timedelta(minutes=job.interval_min)
    return IntervalTrigger(seconds=every.total_seconds(), start_date=now + every, timezone=tz)


def summary_date_for(run_time: datetime) -> date:
    """Which day a summary run covers: a run in the morning (before noon) summarises the
    day before, so `5 0 * * *` summarises complete days and a late 23:55 run still gets
    its own day."""
    d = run_time.date()
    return d if run_time.hour >= 12 else d - timedelta(days=1)


def today_is_due(trigger: BaseTrigger | None, now: datetime) -> bool:
    """Has a summary run for today's date been scheduled between midnight and now?"""
    if not isinstance(trigger, CronTrigger):
        return False
    today = now.date()
    midnight = datetime.combine(today, time(0), tzinfo=now.tzinfo)
    t = trigger.get_next_fire_time(None, midnight)
    for _ in range(2000):  # one day of a per-minute cron, with room
        if t is None or t > now:
            return False
        if summary_date_for(t.astimezone(now.tzinfo)) == today:
            return True
        t = trigger.get_next_fire_time(t, _just_after(t))
    return False


def missing_summary_days(
    now: datetime,
    trigger: BaseTrigger | None,
    earliest: date,
    existing: set[date],
    has_visits: Callable[[date], bool],
) -> list[date]:
    """Days from `earliest` on that have visits and no summary, and are due: every day
    before today, and today once its scheduled run has passed."""
    today = now.date()
    out = []
    d = earliest
    while d <= today:
        if d not in existing and (d < today or today_is_due(trigger, now)) and has_visits(d):
            out.append(d)
        d += timedelta(days=1)
    return out

