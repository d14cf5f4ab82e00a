"""A day summary as people read it: a log table, Markdown, and a mosaic of the best crops
(a fixed JPEG encoder setup, so the same day renders to the same bytes)."""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

if TYPE_CHECKING:
    pass

from camtrap.reports.build import DaySummary, SpeciesDay

log = logging.getLogger(__name__)

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


