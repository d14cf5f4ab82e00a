"""Seeding a real camtrap SQLite store with visits and their crop JPEGs, for the summary,
scheduler and retention tests. Each species gets a solid colour so a test can find its
tile in the mosaic."""

from __future__ import annotations

import hashlib
import io
from datetime import datetime
from pathlib import Path

from PIL import Image

from camtrap.config.loader import parse_config
from camtrap.config.models import Config
from camtrap.storage.store import Store
from camtrap.visits.tracker import VisitEvent

COLORS = {
    "Eurasian Hoopoe": (220, 120, 30),
    "Great Tit": (30, 160, 60),
    "White Wagtail": (40, 90, 210),
    "Palestine Sunbird": (150, 40, 170),
    "House Sparrow": (200, 200, 40),
    "Unknown bird": (128, 128, 128),
}


def crop_jpeg(color: tuple[int, int, int], size: int = 240) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def add_visit(
    store: Store,
    camera: str,
    species: str,
    start: datetime,
    *,
    score: float = 0.9,
    hits: int = 3,
    duration_s: float = 20.0,
    unknown: bool = False,
    crop: bool = True,
) -> VisitEvent:
    """Record one ended visit (and its crop file) through Store.record, as the daemon does."""
    start_ts = start.timestamp()
    vid = hashlib.sha1(f"{camera}|{species}|{start_ts}".encode()).hexdigest()[:16]
    color = COLORS.get(species, (90, 90, 90))
    ev = VisitEvent(
        kind="end",
        visit_id=vid,
        camera=camera,
        species=species,
        unknown=unknown,
        score=score,
        hits=hits,
        start_ts=start_ts,
        last_ts=start_ts + duration_s,
        end_ts=start_ts + duration_s + 30,
        top_k=((species, score),),
        box=(10, 20, 240, 240),
        frame_size=(640, 360),
        crop_jpeg=crop_jpeg(color) if crop else b"",
    )
    store.record(ev, [])
    return ev


def make_config(
    state_dir: Path,
    *,
    tz: str = "Asia/Jerusalem",
    schedule: str = "",
    storage: str = "",
    feeder: str = "",
    extra: str = "",
) -> Config:
    """Two cameras (feeder, ground); the keyword texts are YAML lines added inside the
    schedule, storage and feeder-camera sections, `extra` at the top level."""
    text = f"""
cameras:
  - name: feeder
    url: rtsp://cam.local/feeder
{feeder}
  - name: ground
    url: rtsp://cam.local/ground
storage:
  state_dir: {state_dir}
{storage}
mqtt:
  prefix: camtrap
schedule:
  timezone: {tz}
{schedule}
{extra}"""
    return parse_config(text, "test.yaml", env={})
