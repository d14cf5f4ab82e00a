"""Daily summary from a seeded SQLite store: content, flags, text, mosaic, idempotent files,
and `camtrap summary` (summary_command)."""

from __future__ import annotations

import io
import json
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from PIL import Image

from camtrap.reports.build import load_summary, summary_from_dict
from camtrap.reports.files import summary_command, write_summary
from camtrap.reports.render import (
    HEADER_H,
    LABEL_H,
    PLACEHOLDER,
    TILE,
    mosaic_layout,
    render_mosaic,
    summary_json,
    summary_markdown,
    summary_table,
)
from camtrap.storage.store import Store
from camtrap.timeutil import day_bounds
from tests.seed import COLORS, add_visit, make_config

JLM = ZoneInfo("Asia/Jerusalem")
DAY = date(2026, 5, 14)
CAMERAS = ["feeder", "ground"]


def at(h: int, m: int, d: date = DAY, tz: ZoneInfo = JLM) -> datetime:
    return datetime(d.year, d.month, d.day, h, m, tzinfo=tz)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "state")
    # history: a Great Tit last year, a White Wagtail earlier this year, no Hoopoe ever
    add_visit(s, "feeder", "Great Tit", at(8, 0, date(2025, 12, 20)))
    add_visit(s, "ground", "White Wagtail", at(10, 0, date(2026, 2, 1)))
    # the day
    add_visit(s, "feeder", "Eurasian Hoopoe", at(7, 10), score=0.81, hits=4)
    add_visit(s, "feeder", "Eurasian Hoopoe", at(7, 40), score=0.93, hits=6)
    add_visit(s, "ground", "Eurasian Hoopoe", at(16, 5), score=0.70, hits=2)
    add_visit(s, "ground", "Great Tit", at(9, 0), score=0.88)
    add_visit(s, "feeder", "Great Tit", at(9, 30), score=0.95)
    add_visit(s, "ground", "White Wagtail", at(12, 15), score=0.77, crop=False)
    add_visit(s, "feeder", "Unknown bird", at(13, 0), score=0.41, unknown=True)
    # just outside the day on both sides
    add_visit(s, "feeder", "House Sparrow", at(23, 59, date(2026, 5, 13)))
    add_visit(s, "feeder", "House Sparrow", at(0, 0, date(2026, 5, 15)))
    s.add_uptime(DAY.isoformat(), "feeder", up=80000, total=86400, paused=0)
    yield s
    s.close()


def test_summary_content(store: Store) -> None:
    s = load_summary(store, DAY, JLM, CAMERAS)
    assert s.date == "2026-05-14" and s.timezone == "Asia/Jerusalem"
    assert s.visits == 7
    assert s.species_count == 3  # the unknown tier is not a species
    assert [x.species for x in s.species] == [
        "Eurasian Hoopoe",
        "Great Tit",
        "White Wagtail",
        "Unknown bird",
    ]
    hoopoe, tit, wagtail, unknown = s.species
    assert (hoopoe.visits, hoopoe.hits, hoopoe.best_score) == (3, 12, 0.93)
    assert hoopoe.first_seen == "2026-05-14T07:10:00+03:00"
    assert hoopoe.last_seen == "2026-05-14T16:05:20+03:00"
    assert hoopoe.busiest_hour == 7
    assert hoopoe.hourly[7] == 2 and hoopoe.hourly[16] == 1 and sum(hoopoe.hourly) == 3
    assert hoopoe.cameras == {"feeder": 2, "ground": 1}
    assert hoopoe.best_camera == "feeder" and hoopoe.best_crop is not None
    assert (hoopoe.new_ever, hoopoe.first_this_year) == (True, True)
    assert (tit.new_ever, tit.first_this_year) == (False, True)  # seen only last year
    assert (tit.best_score, tit.best_camera, tit.busiest_hour) == (0.95, "feeder", 9)
    assert (wagtail.new_ever, wagtail.first_this_year) == (False, False)
    assert wagtail.best_crop is None
    assert unknown.unknown and not unknown.new_ever and not unknown.first_this_year
    assert s.new_species == ("Eurasian Hoopoe",)
    assert s.first_this_year == ("Eurasian Hoopoe", "Great Tit")
    assert sum(s.hourly) == 7 and s.hourly[7] == 2 and s.hourly[9] == 2
    feeder, ground = s.cameras
    assert (feeder.camera, feeder.visits, feeder.species) == ("feeder", 4, 2)
    assert (feeder.seconds_up, feeder.seconds_watched, feeder.uptime) == (80000, 86400, 0.9259)
    assert (ground.camera, ground.visits, ground.species, ground.uptime) == ("ground", 3, 3, None)


def test_table_and_markdown(store: Store) -> None:
    s = load_summary(store, DAY, JLM, CAMERAS)
    table = summary_table(s)
    assert "Summary 2026-05-14: 7 visits of 3 species (Asia/Jerusalem)" in table
    assert "New ever: Eurasian Hoopoe" in table
    hoopoe_line = next(line for line in table.splitlines() if line.startswith("Eurasian Hoopoe"))
    for cell in ("3", "07:10", "16:05", "07:00", "0.93", "new ever"):
        assert cell in hoopoe_line
    assert "92.6%" in table  # feeder uptime
    md = summary_markdown(s)
    assert md.startswith("# Birds on 2026-05-14\n")
    assert "![best crop of each species](2026-05-14.jpg)" in md
    assert "| Eurasian Hoopoe | 3 | 07:10 | 16:05 | 07:00 | 0.93 |" in md
    assert "First this year: Great Tit." in md


def _mean(img: Image.Image, box: tuple[int, int, int, int]) -> tuple[float, ...]:
    return img.crop(box).resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))


def test_mosaic_has_a_tile_per_species(store: Store) -> None:
    s = load_summary(store, DAY, JLM, CAMERAS)
    mosaic = render_mosaic(s, store.state_dir)
    cols, rows = mosaic_layout(4)
    assert (cols, rows) == (2, 2)
    expected = (cols * TILE, HEADER_H + rows * (TILE + LABEL_H))
    img = Image.open(io.BytesIO(mosaic.jpeg))
    assert img.format == "JPEG" and img.size == expected == mosaic.size
    img = img.convert("RGB")
    assert [name for name, _ in mosaic.tiles] == [x.species for x in s.species]
    for name, (x, y, w, h) in mosaic.tiles:
        want = PLACEHOLDER if name == "White Wagtail" else COLORS[name]  # no crop kept
        got = _mean(img, (x + 20, y + 20, x + 60, y + 60))
        assert all(abs(a - b) < 12 for a, b in zip(got, want, strict=True)), (name, got)
        label = img.crop((x, y + h, x + w, y + h + LABEL_H)).convert("L")
        lo, hi = label.getextrema()
        assert hi - lo > 100, f"{name}: no label text"


def test_mosaic_without_visits(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    s = load_summary(store, DAY, JLM, CAMERAS)
    assert s.visits == 0 and s.species == ()
    mosaic = render_mosaic(s, store.state_dir)
    assert Image.open(io.BytesIO(mosaic.jpeg)).size == (2 * TILE, HEADER_H + 80)
    store.close()


def test_writing_twice_gives_identical_files(store: Store, tmp_path: Path) -> None:
    s = load_summary(store, DAY, JLM, CAMERAS)
    out = tmp_path / "summaries"
    first = write_summary(s, out, store.state_dir)
    assert first.changed
    saved = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(saved) == ["2026-05-14.jpg", "2026-05-14.json", "2026-05-14.md"]
    assert not list(out.glob("*.tmp"))
    # the same day again, from a freshly opened store: same bytes, nothing rewritten
    again = Store(store.state_dir)
    second = write_summary(load_summary(again, DAY, JLM, CAMERAS), out, store.state_dir)
    again.close()
    assert not second.changed
    assert {p.name: p.read_bytes() for p in out.iterdir()} == saved
    # and in another folder from scratch (the JPEG encoder is deterministic too)
    other = write_summary(s, tmp_path / "other", store.state_dir)
    assert other.image.read_bytes() == saved["2026-05-14.jpg"]
    data = json.loads(saved["2026-05-14.json"])
    assert list(data) == sorted(data)  # sorted keys
    assert "generated" not in saved["2026-05-14.json"].decode()
    assert summary_from_dict(data) == s  # the file reads back into the same summary


def test_dst_days_have_23_and_25_hours(tmp_path: Path) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start, end = day_bounds(date(2026, 10, 25), berlin)
    assert end - start == 25 * 3600
    start, end = day_bounds(date(2026, 3, 27), JLM)
    assert end - start == 23 * 3600
    store = Store(tmp_path / "state")
    # 02:30 happens twice in Berlin on 2026-10-25: both count in the 02 slot
    first = datetime(2026, 10, 25, 2, 30, tzinfo=berlin, fold=0)
    second = datetime(2026, 10, 25, 2, 30, tzinfo=berlin, fold=1)
    assert second.timestamp() - first.timestamp() == 3600
    add_visit(store, "feeder", "Great Tit", first)
    add_visit(store, "feeder", "Great Tit", second)
    add_visit(store, "feeder", "Great Tit", datetime(2026, 10, 25, 23, 30, tzinfo=berlin))
    s = load_summary(store, date(2026, 10, 25), berlin, CAMERAS)
    assert s.visits == 3 and s.hourly[2] == 2 and s.hourly[23] == 1
    assert s.species[0].first_seen == "2026-10-25T02:30:00+02:00"
    store.close()


def test_summary_command(store: Store, tmp_path: Path) -> None:
    cfg = make_config(store.state_dir)
    out, err = io.StringIO(), io.StringIO()
    assert summary_command(cfg, "2026-05-14", as_json=True, out=out, err=err) == 0
    assert out.getvalue().encode() == summary_json(load_summary(store, DAY, JLM, CAMERAS))
    out = io.StringIO()
    assert summary_command(cfg, "2026-05-14", as_json=False, out=out, err=err) == 0
    assert "Eurasian Hoopoe" in out.getvalue() and "new ever" in out.getvalue()
    err = io.StringIO()
    assert summary_command(cfg, "14/05/2026", as_json=False, out=out, err=err) == 2
    assert "--date: '14/05/2026' is not a date" in err.getvalue()
    missing = make_config(tmp_path / "nowhere")
    err = io.StringIO()
    assert summary_command(missing, None, as_json=False, out=out, err=err) == 1
    assert "no database" in err.getvalue()
    assert not (tmp_path / "nowhere" / "camtrap.sqlite3").exists()


def test_summary_command_reads_a_saved_day_after_retention(store: Store) -> None:
    cfg = make_config(store.state_dir)
    s = load_summary(store, DAY, JLM, CAMERAS)
    write_summary(s, store.state_dir / "summaries", store.state_dir)
    store.delete_visits_before(day_bounds(date(2026, 5, 15), JLM)[0])
    assert load_summary(store, DAY, JLM, CAMERAS).visits == 0
    out, err = io.StringIO(), io.StringIO()
    assert summary_command(cfg, "2026-05-14", as_json=True, out=out, err=err) == 0
    assert out.getvalue().encode() == summary_json(s)
    assert "no longer stored" in err.getvalue()
