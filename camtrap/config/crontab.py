"""Crontab strings as APScheduler fields, meaning what crontab means (Sunday = 0 or 7)."""

from __future__ import annotations

import re

_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_dow(field: str) -> str:
    """Crontab day-of-week (0 or 7 = Sunday) as APScheduler names: APScheduler 3 reads a
    number as 0 = Monday, so "1-5" would silently mean Tuesday to Saturday."""
    out: list[str] = []
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        if not re.fullmatch(r"\*|\d+(-\d+)?", base):
            out.append(part)  # names (mon-fri) and anything else: APScheduler's own reading
            continue
        step = int(step_text) if step_text.isdigit() else 1
        if not step_text and base != "*" and "-" not in base:
            out.append(_DOW_NAMES[int(base) % 7] if int(base) <= 7 else base)
            continue
        if base == "*" and not step_text:
            out.append("*")
            continue
        bounds = [int(x) for x in base.split("-")] if base != "*" else [0, 6]
        lo, hi = bounds[0], bounds[-1] if len(bounds) == 2 else 6  # "5/2" is "5-6/2"
        if hi > 7 or lo > hi or step < 1:
            out.append(part)  # let APScheduler report it
            continue
        out.extend(dict.fromkeys(_DOW_NAMES[d % 7] for d in range(lo, hi + 1, step)))
    return ",".join(dict.fromkeys(out))


def crontab_fields(expr: str) -> dict[str, str]:
    """A standard 5-field crontab as APScheduler CronTrigger arguments (minute hour day
    month day-of-week, with cron's Sunday = 0). APScheduler ANDs day and day-of-week where
    cron ORs them when both are restricted: restrict only one."""
    values = expr.split()
    if len(values) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(values)}")
    minute, hour, day, month, dow = values
    return {
        "minute": minute,
        "hour": hour,
        "day": day,
        "month": month,
        "day_of_week": _cron_dow(dow),
    }

