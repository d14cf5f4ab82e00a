"""Daily summaries: one local day's visits -> counts and flags, a table, Markdown, a mosaic.

Everything here is a function of the database contents alone (no "generated at" stamps,
sorted JSON keys, a fixed JPEG encoder setup), so producing a date twice gives byte-identical
files: a summary re-made after a restart, or by `camtrap summary`, never disagrees with the
one that was published.

Hours are local hours of the configured zone. On the night clocks go back the repeated hour
counts into the same histogram slot; on the night they go forward one slot stays empty.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

from PIL import Image, ImageDraw, ImageFont, ImageOps

from camtrap.payloads import Topics

if TYPE_CHECKING:
    from camtrap.config import Config
    from camtrap.store import RollupRow, Store, Uptime, VisitRow

log = logging.getLogger(__name__)

SCHEMA = 1
TILE = 240  # crop side in the mosaic (the model's crops are 240x240)
LABEL_H = 52  # text band under each tile
HEADER_H = 36
MAX_COLS = 6
MAX_TILES = 36
BACKGROUND = (24, 26, 28)
PLACEHOLDER = (70, 74, 78)
TEXT = (240, 240, 240)
MUTED = (170, 176, 182)
ACCENT = (255, 196, 0)
SPARK = "·▁▂▃▄▅▆▇█"  # zero, then eighths


def resolve_tz(name: str | None) -> tzinfo:
    """The configured IANA zone, else the system's (as a named zone, so summaries say which)."""
    if name:
        return ZoneInfo(name)
    import tzlocal  # APScheduler 3's own dependency

    return tzlocal.get_localzone()


def zone_name(tz: tzinfo) -> str:
    return getattr(tz, "key", None) or str(tz)


def day_bounds(day: date, tz: tzinfo) -> tuple[float, float]:
    """[start, end) of a local calendar day as Unix times: 23 or 25 hours on DST days."""
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start.timestamp(), end.timestamp()


def _local(ts: float, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(ts, tz)


@dataclass(frozen=True)
class SpeciesDay:
    species: str
    unknown: bool  # the "unknown bird" tier, not a species
    visits: int
    hits: int
    first_seen: str  # ISO 8601 local: start of the first visit
    last_seen: str  # ISO 8601 local: latest sighting
    busiest_hour: int  # local hour (0-23) with the most visit starts; earliest on a tie
    best_score: float
    best_visit_id: str
    best_camera: str
    best_crop: str | None  # relative to the state directory
    hourly: tuple[int, ...]  # 24 visit-start counts by local hour
    cameras: dict[str, int]
    new_ever: bool  # never seen before this day (visits and rollups of deleted visits)
    first_this_year: bool  # not seen earlier in this calendar year


@dataclass(frozen=True)
class CameraDay:
    camera: str
    visits: int
    species: int
    hits: int
    seconds_up: float | None  # connected, inside active hours (None: not recorded)
    seconds_watched: float | None  # daemon running, inside active hours
    seconds_paused: float | None  # outside active hours
    uptime: float | None  # seconds_up / seconds_watched


@dataclass(frozen=True)
class DaySummary:
    schema: int
    date: str
    timezone: str
    visits: int
    species_count: int  # named species, the unknown tier not counted
    new_species: tuple[str, ...]
    first_this_year: tuple[str, ...]
    hourly: tuple[int, ...]
    species: tuple[SpeciesDay, ...]
    cameras: tuple[CameraDay, ...]
    image: str  # file name of the mosaic beside the JSON
    extra: dict[str, Any] = field(default_factory=dict)  # room for fields added later

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


def summary_from_dict(data: Mapping[str, Any]) -> DaySummary:
    """Read back a summary JSON (e.g. for a day whose visits retention has deleted)."""
    known = set(DaySummary.__dataclass_fields__)

    def only(cls: type, d: Mapping[str, Any]) -> dict[str, Any]:  # fields added later: ignored
        return {k: v for k, v in d.items() if k in cls.__dataclass_fields__}

    species = tuple(
        SpeciesDay(**{**only(SpeciesDay, s), "hourly": tuple(s["hourly"])})
        for s in data.get("species", [])
    )
    cameras = tuple(CameraDay(**only(CameraDay, c)) for c in data.get("cameras", []))
    return DaySummary(
        schema=data["schema"],
        date=data["date"],
        timezone=data["timezone"],
        visits=data["visits"],
        species_count=data["species_count"],
        new_species=tuple(data.get("new_species", ())),
        first_this_year=tuple(data.get("first_this_year", ())),
        hourly=tuple(data["hourly"]),
        species=species,
        cameras=cameras,
        image=data.get("image", f"{data['date']}.jpg"),
        extra={k: v for k, v in data.items() if k not in known},
    )


# --- building ---------------------------------------------------------------------------


def build_summary(
    day: date,
    tz: tzinfo,
    visits: Sequence[VisitRow],
    cameras: Iterable[str],
    uptime: Mapping[str, Uptime],
    last_seen_before: Callable[[str], float | None],
) -> DaySummary:
    """The summary of one local day from its visits (pure but for `last_seen_before`, which
    answers "when was this species last seen before this day", from the store)."""
    year_start, _ = day_bounds(date(day.year, 1, 1), tz)
    by_species: dict[str, list[VisitRow]] = {}
    for v in visits:
        by_species.setdefault(v.species, []).append(v)
    hourly_total = [0] * 24
    out: list[SpeciesDay] = []
    for name, rows in by_species.items():
        hourly = [0] * 24
        cams: dict[str, int] = {}
        for v in rows:
            hourly[_local(v.start_ts, tz).hour] += 1
            cams[v.camera] = cams.get(v.camera, 0) + 1
        for h, n in enumerate(hourly):
            hourly_total[h] += n
        # best: highest score, then earliest, then id: a total order, so re-runs agree
        best = min(rows, key=lambda v: (-v.best_score, v.start_ts, v.visit_id))
        unknown = all(v.unknown for v in rows)
        previous = None if unknown else last_seen_before(name)
        out.append(
            SpeciesDay(
                species=name,
                unknown=unknown,
                visits=len(rows),
                hits=sum(v.hits for v in rows),
                first_seen=_iso(min(v.start_ts for v in rows), tz),
                last_seen=_iso(max(v.last_ts for v in rows), tz),
                busiest_hour=max(range(24), key=lambda h: (hourly[h], -h)),
                best_score=round(best.best_score, 4),
                best_visit_id=best.visit_id,
                best_camera=best.camera,
                best_crop=best.crop_file,
                hourly=tuple(hourly),
                cameras=dict(sorted(cams.items())),
                new_ever=not unknown and previous is None,
                first_this_year=not unknown and (previous is None or previous < year_start),
            )
        )
    out.sort(key=lambda s: (s.unknown, -s.visits, -s.best_score, s.species))
    camera_names = sorted(set(cameras) | {v.camera for v in visits} | set(uptime))
    cams_out = []
    for cam in camera_names:
        rows = [v for v in visits if v.camera == cam]
        up = uptime.get(cam)
        cams_out.append(
            CameraDay(
                camera=cam,
                visits=len(rows),
                species=len({v.species for v in rows if not v.unknown}),
                hits=sum(v.hits for v in rows),
                seconds_up=None if up is None else round(up.up),
                seconds_watched=None if up is None else round(up.total),
                seconds_paused=None if up is None else round(up.paused),
                uptime=round(up.up / up.total, 4) if up is not None and up.total > 0 else None,
            )
        )
    return DaySummary(
        schema=SCHEMA,
        date=day.isoformat(),
        timezone=zone_name(tz),
        visits=len(visits),
        species_count=sum(1 for s in out if not s.unknown),
        new_species=tuple(s.species for s in out if s.new_ever),
        first_this_year=tuple(s.species for s in out if s.first_this_year),
        hourly=tuple(hourly_total),
        species=tuple(out),
        cameras=tuple(cams_out),
        image=f"{day.isoformat()}.jpg",
    )


def _iso(ts: float, tz: tzinfo) -> str:
    return _local(ts, tz).isoformat(timespec="seconds")


def load_summary(store: Store, day: date, tz: tzinfo, cameras: Iterable[str]) -> DaySummary:
    """The summary of `day` from the database."""
    start, end = day_bounds(day, tz)
    visits = store.visits_between(start, end)
    return build_summary(
        day,
        tz,
        visits,
        cameras,
        store.uptime(day.isoformat()),
        lambda species: store.last_seen_before(species, start),
    )


def rollup_rows(day: date, visits: Sequence[VisitRow]) -> list[RollupRow]:
    """Per camera+species totals of one day's visits, for the `daily_rollups` table."""
    from camtrap.store import RollupRow

    groups: dict[tuple[str, str], list[VisitRow]] = {}
    for v in visits:
        groups.setdefault((v.camera, v.species), []).append(v)
    return [
        RollupRow(
            day=day.isoformat(),
            camera=cam,
            species=species,
            unknown=all(v.unknown for v in rows),
            visits=len(rows),
            hits=sum(v.hits for v in rows),
            best_score=max(v.best_score for v in rows),
            first_ts=min(v.start_ts for v in rows),
            last_ts=max(v.last_ts for v in rows),
        )
        for (cam, species), rows in sorted(groups.items())
    ]


# --- text -------------------------------------------------------------------------------


def summary_json(summary: DaySummary) -> bytes:
    """The file and the MQTT payload: sorted keys, so equal summaries are equal bytes."""
    text = json.dumps(summary.to_dict(), sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode()


def sparkline(counts: Sequence[int]) -> str:
    top = max(counts, default=0)
    return "".join(
        SPARK[0] if n == 0 else SPARK[max(1, math.ceil(n / top * (len(SPARK) - 1)))] for n in counts
    )


def _hhmm(iso: str) -> str:
    return iso[11:16]


def _flags(s: SpeciesDay) -> str:
    if s.new_ever:
        return "new ever"
    return "first this year" if s.first_this_year else ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    h, m = divmod(round(seconds / 60), 60)
    return f"{h}h{m:02d}"


def _headline(s: DaySummary) -> str:
    species = f"{s.species_count} species" if s.species_count != 1 else "1 species"
    visits = f"{s.visits} visits" if s.visits != 1 else "1 visit"
    return f"{visits} of {species} ({s.timezone})"


def _species_rows(s: DaySummary) -> list[list[str]]:
    return [
        [
            sp.species,
            str(sp.visits),
            _hhmm(sp.first_seen),
            _hhmm(sp.last_seen),
            f"{sp.busiest_hour:02d}:00",
            f"{sp.best_score:.2f}",
            sparkline(sp.hourly),
            _flags(sp),
        ]
        for sp in s.species
    ]


def _camera_rows(s: DaySummary) -> list[list[str]]:
    return [
        [
            c.camera,
            str(c.visits),
            str(c.species),
            _duration(c.seconds_up),
            _duration(c.seconds_watched),
            _duration(c.seconds_paused),
            "-" if c.uptime is None else f"{c.uptime:.1%}",
        ]
        for c in s.cameras
    ]


SPECIES_HEAD = ["Species", "Visits", "First", "Last", "Busiest", "Best", "Hours 0-23", "Note"]
CAMERA_HEAD = ["Camera", "Visits", "Species", "Up", "Watched", "Paused", "Uptime"]


def _grid(head: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(head), "  ".join("-" * w for w in widths).rstrip(), *map(line, rows)]


def summary_table(s: DaySummary) -> str:
    """A terminal (and log) view."""
    lines = [f"Summary {s.date}: {_headline(s)}"]
    if s.new_species:
        lines.append("New ever: " + ", ".join(s.new_species))
    if s.species:
        lines += ["", *_grid(SPECIES_HEAD, _species_rows(s), {1, 4, 5})]
    else:
        lines.append("No visits.")
    if s.cameras:
        lines += ["", *_grid(CAMERA_HEAD, _camera_rows(s), {1, 2, 3, 4, 5, 6})]
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(head: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(head))]
    return ["| " + " | ".join(map(_md_cell, cells)) + " |" for cells in [head, align, *rows]]


def summary_markdown(s: DaySummary) -> str:
    lines = [f"# Birds on {s.date}", "", _headline(s) + ".", ""]
    if s.new_species:
        lines += ["New ever: " + ", ".join(s.new_species) + ".", ""]
    year_only = [x for x in s.first_this_year if x not in s.new_species]
    if year_only:
        lines += ["First this year: " + ", ".join(year_only) + ".", ""]
    lines += [f"![best crop of each species]({s.image})", ""]
    if s.species:
        rows = _species_rows(s)
        for r in rows:
            r[6] = f"`{r[6]}`"
        lines += ["## Species", "", *_md_table(SPECIES_HEAD, rows, {1, 4, 5}), ""]
    if s.cameras:
        lines += ["## Cameras", "", *_md_table(CAMERA_HEAD, _camera_rows(s), set(range(1, 7))), ""]
    hours = [f"{h:02d}" for h in range(24)]
    lines += ["## Visits by hour", "", *_md_table(hours, [[str(n) for n in s.hourly]], set()), ""]
    return "\n".join(lines)


# --- mosaic -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mosaic:
    jpeg: bytes
    size: tuple[int, int]
    tiles: tuple[tuple[str, tuple[int, int, int, int]], ...]  # species, picture box x,y,w,h


def mosaic_layout(n: int) -> tuple[int, int]:
    """(columns, rows) for n tiles: about square, at most MAX_COLS wide."""
    if n == 0:
        return 2, 0
    cols = min(MAX_COLS, math.ceil(math.sqrt(n)))
    return cols, math.ceil(n / cols)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _tile_picture(state_dir: Path, crop: str | None) -> Image.Image | None:
    if crop is None:
        return None
    try:
        with Image.open(state_dir / crop) as img:
            return ImageOps.fit(img.convert("RGB"), (TILE, TILE), Image.Resampling.LANCZOS)
    except (OSError, ValueError) as exc:
        log.warning("summary: crop %s unreadable: %s", crop, exc)
        return None


def render_mosaic(s: DaySummary, state_dir: Path, quality: int = 90) -> Mosaic:
    """The best crop of each species in a grid, each labelled with name, visits and score."""
    shown = s.species[:MAX_TILES]
    cols, rows = mosaic_layout(len(shown))
    width = cols * TILE
    height = HEADER_H + (rows * (TILE + LABEL_H) if rows else 80)
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    big, small = _font(18), _font(14)
    more = len(s.species) - len(shown)
    header = f"{s.date}  ·  {_headline(s)}" + (f"  ·  +{more} more" if more else "")
    draw.text((10, 9), _fit(draw, header, big, width - 20), font=big, fill=TEXT)
    if not shown:
        draw.text((10, HEADER_H + 28), "No visits", font=big, fill=MUTED)
    tiles = []
    for i, sp in enumerate(shown):
        x = (i % cols) * TILE
        y = HEADER_H + (i // cols) * (TILE + LABEL_H)
        picture = _tile_picture(state_dir, sp.best_crop)
        if picture is None:
            draw.rectangle((x, y, x + TILE - 1, y + TILE - 1), fill=PLACEHOLDER)
            draw.text((x + 10, y + TILE // 2 - 9), "no picture kept", font=small, fill=MUTED)
        else:
            img.paste(picture, (x, y))
        tiles.append((sp.species, (x, y, TILE, TILE)))
        draw.text(
            (x + 6, y + TILE + 5), _fit(draw, sp.species, big, TILE - 12), font=big, fill=TEXT
        )
        visits = f"{sp.visits} visit" + ("" if sp.visits == 1 else "s")
        line = f"{visits} · best {sp.best_score:.2f}"
        flag = _flags(sp)
        draw.text((x + 6, y + TILE + 29), line, font=small, fill=MUTED)
        if flag:
            fx = x + TILE - 6 - int(draw.textlength(flag, font=small))
            draw.text((fx, y + TILE + 29), flag, font=small, fill=ACCENT)
    buf = io.BytesIO()
    # Baseline JPEG, fixed settings, no EXIF or timestamps: same picture, same bytes.
    img.save(buf, "JPEG", quality=quality, optimize=False, progressive=False)
    return Mosaic(buf.getvalue(), img.size, tuple(tiles))


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


# --- Home Assistant and the command line --------------------------------------------------


def summary_entities(prefix: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Discovery entities for the daemon device: the summary picture and the digest."""
    t = Topics(prefix)
    return {
        ("image", "daily_summary"): {
            "name": "Daily summary",
            "image_topic": f"{t.summary}/image",
            "content_type": "image/jpeg",
            "icon": "mdi:image-multiple",
        },
        ("sensor", "last_summary"): {
            "name": "Last summary",
            "state_topic": t.summary,
            "value_template": "{{ value_json.date }}",
            "json_attributes_topic": t.summary,
            "json_attributes_template": (
                "{{ {'visits': value_json.visits, 'species_count': value_json.species_count,"
                " 'new_species': value_json.new_species} | tojson }}"
            ),
            "icon": "mdi:calendar-check",
        },
        ("sensor", "visits_today"): {
            "name": "Visits today",
            "state_topic": t.digest,
            "value_template": "{{ value_json.visits }}",
            "json_attributes_topic": t.digest,
            "json_attributes_template": "{{ value_json.species | tojson }}",
            "state_class": "total_increasing",
            "unit_of_measurement": "visits",
            "icon": "mdi:counter",
        },
        ("sensor", "species_today"): {
            "name": "Species today",
            "state_topic": t.digest,
            "value_template": "{{ value_json.species_count }}",
            "state_class": "measurement",
            "icon": "mdi:bird",
        },
    }


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
    from camtrap.store import Store

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
