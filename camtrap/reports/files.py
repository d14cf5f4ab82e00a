"""Summary files on disk (JSON, Markdown, mosaic) and the `camtrap summary` command."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from camtrap.config.models import Config

from camtrap.reports.build import DaySummary, load_summary, summary_from_dict
from camtrap.reports.render import render_mosaic, summary_json, summary_markdown, summary_table
from camtrap.timeutil import resolve_tz

log = logging.getLogger(__name__)

# --- files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryFiles:
    json: Path
    markdown: Path
    image: Path
    changed: bool  # False when every file already had these bytes


def _write_if_changed(path: Path, data: bytes) -> bool:
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def write_summary(s: DaySummary, out_dir: Path, state_dir: Path, quality: int = 90) -> SummaryFiles:
    """`out_dir/YYYY-MM-DD.{jpg,md,json}`, each replaced atomically and only when different.
    The JSON goes last: its presence is what marks a date as summarised."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / s.date
    paths = (base.with_suffix(".jpg"), base.with_suffix(".md"), base.with_suffix(".json"))
    mosaic = render_mosaic(s, state_dir, quality)
    changed = False
    for path, data in zip(
        paths,
        (mosaic.jpeg, summary_markdown(s).encode(), summary_json(s)),
        strict=True,
    ):
        changed |= _write_if_changed(path, data)
    return SummaryFiles(json=paths[2], markdown=paths[1], image=paths[0], changed=changed)


def summary_dates(out_dir: Path) -> set[date]:
    """Dates that have a summary JSON."""
    found = set()
    for p in out_dir.glob("*.json"):
        try:
            found.add(date.fromisoformat(p.stem))
        except ValueError:
            continue
    return found


def parse_day(text: str | None, tz: tzinfo, now: datetime | None = None) -> date:
    """YYYY-MM-DD, `today` or `yesterday` (local); None is today."""
    today = (now or datetime.now(tz)).astimezone(tz).date()
    if text is None or text == "today":
        return today
    if text == "yesterday":
        return today - timedelta(days=1)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--date: {text!r} is not a date (YYYY-MM-DD, today, yesterday)") from None


def summary_command(
    cfg: Config,
    date_text: str | None,
    as_json: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`camtrap summary`: any day's summary from the database, no daemon needed. A day whose
    visits retention deleted is read from its saved JSON. Exit 2 on a bad date, 1 when
    there is no database."""
    from camtrap.storage.store import Store

    out, err = out or sys.stdout, err or sys.stderr
    tz = resolve_tz(cfg.schedule.timezone)
    try:
        day = parse_day(date_text, tz)
    except ValueError as exc:
        print(f"camtrap: {exc}", file=err)
        return 2
    state_dir = cfg.storage.state_dir
    if not (state_dir / "camtrap.sqlite3").exists():
        print(f"camtrap: no database in {state_dir} (storage.state_dir)", file=err)
        return 1
    store = Store(state_dir, save_crops=False)
    try:
        summary = load_summary(store, day, tz, [c.name for c in cfg.cameras])
    finally:
        store.close()
    saved = state_dir / "summaries" / f"{day.isoformat()}.json"
    if summary.visits == 0 and saved.exists():
        summary = summary_from_dict(json.loads(saved.read_text(encoding="utf-8")))
        print(f"camtrap: {day} read from {saved} (its visits are no longer stored)", file=err)
    if as_json:
        out.write(summary_json(summary).decode())
    else:
        out.write(summary_table(summary))
    return 0
