"""Active hours: when each camera decodes (fixed times or sunrise/sunset with offsets)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING, Literal

from astral import Observer
from astral.sun import sunrise, sunset

from camtrap.config.models import TIME_SPEC_RE
from camtrap.timeutil import day_bounds

if TYPE_CHECKING:
    from camtrap.config.models import ActiveHoursConfig, LocationConfig

log = logging.getLogger(__name__)


# --- active hours -----------------------------------------------------------------------


@dataclass(frozen=True)
class TimeSpec:
    anchor: Literal["clock", "sunrise", "sunset"]
    minutes: int  # clock: minutes after midnight; sunrise/sunset: offset (negative = before)


def parse_time_spec(text: str) -> TimeSpec:
    m = TIME_SPEC_RE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not HH:MM, sunrise[+-N] or sunset[+-N]")
    if m["hour"] is not None:
        return TimeSpec("clock", int(m["hour"]) * 60 + int(m["minute"]))
    offset = int(m["offset"] or 0) * (-1 if m["sign"] == "-" else 1)
    return TimeSpec(m["sun"], offset)  # type: ignore[arg-type]


def resolve_time(
    spec: TimeSpec, day: date, tz: tzinfo, location: LocationConfig | None
) -> datetime | None:
    """The moment `spec` means on local `day`; None where the sun doesn't rise or set."""
    if spec.anchor == "clock":
        h, m = divmod(spec.minutes, 60)
        # a wall time that doesn't exist (DST start) lands after the gap, as cron's does
        return datetime.combine(day, time(h, m), tzinfo=tz).astimezone(tz)
    if location is None:
        raise ValueError(f"{spec.anchor} needs a location (latitude, longitude)")
    observer = Observer(location.latitude, location.longitude, location.elevation_m)
    fn = sunrise if spec.anchor == "sunrise" else sunset
    try:
        sun = fn(observer, date=day, tzinfo=tz)
    except ValueError:  # polar day or night
        return None
    return (sun + timedelta(minutes=spec.minutes)).astimezone(tz)


@dataclass(frozen=True)
class ActiveState:
    active: bool
    until: datetime | None  # when that changes (None: not within two days)
    window: str  # today's window in local time, e.g. "05:02-20:17", for status and logs

    def describe(self) -> str:
        nxt = "" if self.until is None else f" until {self.until:%Y-%m-%d %H:%M}"
        what = "active" if self.active else "paused, outside active hours"
        return f"{what} ({self.window}){nxt}"


def _intervals(
    window: ActiveHoursConfig, day: date, tz: tzinfo, location: LocationConfig | None
) -> tuple[datetime, datetime]:
    """The active interval that starts on `day`; an end not after the start is the next
    day's (a window across midnight). Without a sunrise/sunset: the whole day (fail open:
    a camera is never paused because of polar light)."""
    start_spec, end_spec = parse_time_spec(window.start), parse_time_spec(window.end)
    start = resolve_time(start_spec, day, tz, location)
    end = resolve_time(end_spec, day, tz, location)
    if end is not None and start is not None and end <= start:
        end = resolve_time(end_spec, day + timedelta(days=1), tz, location)
    if start is None or end is None:
        lo, hi = day_bounds(day, tz)
        return datetime.fromtimestamp(lo, tz), datetime.fromtimestamp(hi, tz)
    return start, end


def active_state(
    window: ActiveHoursConfig, when: datetime, location: LocationConfig | None, tz: tzinfo
) -> ActiveState:
    """Whether a camera with this window runs at `when`, and until when."""
    when = when.astimezone(tz)
    day = when.date()
    spans = [_intervals(window, day + timedelta(days=k), tz, location) for k in range(-1, 3)]
    today = spans[1]
    label = f"{today[0]:%H:%M}-{today[1]:%H:%M}"
    for i, (s, e) in enumerate(spans):
        if s <= when < e:
            for s2, e2 in spans[i + 1 :]:  # touching intervals (fail-open days) join up
                if s2 <= e:
                    e = max(e, e2)
            return ActiveState(True, e, label)
    upcoming = [s for s, _ in spans if s > when]
    return ActiveState(False, min(upcoming) if upcoming else None, label)


def is_active(
    window: ActiveHoursConfig | None,
    when: datetime,
    location: LocationConfig | None,
    tz: tzinfo,
) -> bool:
    """True when a camera with this window (None: always on) should decode at `when`."""
    return window is None or active_state(window, when, location, tz).active


