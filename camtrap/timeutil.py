"""Time in one place: the configured zone, local day bounds, ISO stamps.

Durations and timeouts use `time.monotonic()` where they are measured; what is here is wall
time, always read in `schedule.timezone` so files, payloads and day folders agree.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo


def resolve_tz(name: str | None) -> tzinfo:
    """The configured IANA zone, else the system's (as a named zone, so summaries say which)."""
    if name:
        return ZoneInfo(name)
    import tzlocal  # APScheduler 3's own dependency

    return tzlocal.get_localzone()


def zone_name(tz: tzinfo) -> str:
    return getattr(tz, "key", None) or str(tz)


def local(ts: float, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(ts, tz)


def iso(ts: float | None, tz: tzinfo | None) -> str | None:
    """ISO 8601 with the zone offset (local zone when `tz` is None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz).astimezone(tz).isoformat(timespec="milliseconds")


def day_bounds(day: date, tz: tzinfo) -> tuple[float, float]:
    """[start, end) of a local calendar day as Unix times: 23 or 25 hours on DST days."""
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start.timestamp(), end.timestamp()


def local_day(ts: float, tz: tzinfo) -> date:
    return datetime.fromtimestamp(ts, tz).date()


def midnight_before(ts: float, tz: tzinfo) -> float:
    """The start of the local day that holds `ts`."""
    return day_bounds(local_day(ts, tz), tz)[0]


def split_by_day(start: datetime, end: datetime, tz: tzinfo) -> list[tuple[date, float]]:
    """Seconds of [start, end) on each local day it touches."""
    out = []
    t = start.astimezone(tz)
    end = end.astimezone(tz)
    while t < end:
        _, day_end = day_bounds(t.date(), tz)
        stop = min(end.timestamp(), day_end)
        out.append((t.date(), stop - t.timestamp()))
        t = datetime.fromtimestamp(stop, tz)
    return out
