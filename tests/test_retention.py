"""Retention on a real SQLite store and real files: old visits with their crops, old crops
alone, old summaries, orphan crop folders; rollups keep "first ever" right afterwards."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from camtrap.comms.payloads import Topics
from camtrap.reports.build import load_summary
from camtrap.schedule.jobs import JobRunner, RetentionResult
from camtrap.storage.store import SCHEMA_VERSION, Store
from camtrap.timeutil import day_bounds
from tests.seed import add_visit, make_config

JLM = ZoneInfo("Asia/Jerusalem")
NOW = datetime(2026, 5, 14, 4, 0, tzinfo=JLM)


def at(y: int, mo: int, d: int, h: int = 8) -> datetime:
    return datetime(y, mo, d, h, 0, tzinfo=JLM)


def test_retention_deletes_what_is_too_old(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = make_config(
        state,
        storage="  retention: {visits_days: 30, crops_days: 7, summaries_days: 10}",
    )
    store = Store(state)
    old = add_visit(store, "feeder", "House Sparrow", at(2026, 3, 1))  # 74 days: goes
    edge_out = add_visit(store, "feeder", "Great Tit", at(2026, 4, 13, 23))  # 31 days: goes
    edge_in = add_visit(store, "feeder", "Great Tit", at(2026, 4, 14, 0))  # 30 days: stays
    middle = add_visit(store, "ground", "Great Tit", at(2026, 4, 20))  # stays, crop goes
    recent = add_visit(store, "ground", "White Wagtail", at(2026, 5, 10))  # all stays
    crop_of = {ev.visit_id: store.crop_path(ev) for ev in (old, edge_out, edge_in, middle, recent)}
    assert all(p.exists() for p in crop_of.values())
    orphan = store.crops_dir / "2026-02-01" / "feeder-0000000000000000.jpg"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"\xff\xd8 orphan")
    summaries = state / "summaries"
    summaries.mkdir()
    for day in ("2026-05-01", "2026-05-05"):
        for ext in ("json", "md", "jpg"):
            (summaries / f"{day}.{ext}").write_text("x")
    (summaries / "notes.txt").write_text("not ours")
    store.add_uptime("2026-03-01", "feeder", 1, 1, 0)
    store.add_uptime("2026-05-10", "feeder", 1, 1, 0)

    runner = JobRunner(cfg, store, Topics(cfg.mqtt.prefix), clock=lambda: NOW)
    result = runner.run_retention()
    assert result == RetentionResult(
        visits=2, crops=5, summaries=3, rolled_up_days=2
    )  # 4 + an orphan

    everything = store.visits_between(0, 2e9)
    assert [v.visit_id for v in everything] == [edge_in.visit_id, middle.visit_id, recent.visit_id]
    crops = {v.visit_id: v.crop_file for v in everything}
    assert crops[recent.visit_id] is not None and crop_of[recent.visit_id].exists()
    for ev in (old, edge_out, edge_in, middle):  # crops older than 7 days are gone
        assert not crop_of[ev.visit_id].exists()
    assert crops[middle.visit_id] is None and crops[edge_in.visit_id] is None
    assert not orphan.parent.exists()
    assert sorted(p.name for p in summaries.iterdir()) == [
        "2026-05-05.jpg",
        "2026-05-05.json",
        "2026-05-05.md",
        "notes.txt",
    ]
    assert set(store.uptime("2026-03-01")) == set() and set(store.uptime("2026-05-10")) == {
        "feeder"
    }
    # the deleted days were rolled up, so the sparrow is not "new ever" when it comes back
    (rollup,) = store.rollups("2026-03-01")
    assert (rollup.species, rollup.visits, rollup.camera) == ("House Sparrow", 1, "feeder")
    add_visit(store, "feeder", "House Sparrow", at(2026, 5, 14))
    s = load_summary(store, date(2026, 5, 14), JLM, ["feeder"])
    (sparrow,) = s.species
    assert (sparrow.new_ever, sparrow.first_this_year) == (False, False)

    # a second run finds nothing more to do
    assert runner.run_retention() == RetentionResult()
    store.close()


def test_keep_forever_deletes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = make_config(
        state, storage="  retention: {visits_days: null, crops_days: null, summaries_days: null}"
    )
    store = Store(state)
    ev = add_visit(store, "feeder", "House Sparrow", at(2020, 1, 1))
    runner = JobRunner(cfg, store, Topics(cfg.mqtt.prefix), clock=lambda: NOW)
    assert runner.run_retention() == RetentionResult()
    assert store.crop_path(ev).exists() and len(store.visits_between(0, 2e9)) == 1
    store.close()


def test_catch_up_does_not_remake_summaries_retention_deleted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = make_config(state, storage="  retention: {summaries_days: 10}")
    store = Store(state)
    add_visit(store, "feeder", "Great Tit", at(2026, 5, 1))  # 13 days ago
    add_visit(store, "feeder", "Great Tit", at(2026, 5, 8))  # 6 days ago
    runner = JobRunner(cfg, store, Topics(cfg.mqtt.prefix), clock=lambda: NOW)
    assert runner.catch_up() == [date(2026, 5, 8)]
    store.close()


def test_migration_from_schema_1_keeps_visits(tmp_path: Path) -> None:
    """A database made by the first release gains the new tables and keeps its rows."""
    import sqlite3

    from camtrap.storage.store import _MIGRATIONS

    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / "camtrap.sqlite3")
    db.executescript(_MIGRATIONS[1] + "; PRAGMA user_version = 1;")
    start, _ = day_bounds(date(2026, 5, 14), JLM)
    db.execute(
        "INSERT INTO visits VALUES ('a', 'feeder', 'Great Tit', 0, ?, ?, NULL, 0.9, 3, '[]',"
        " '[0,0,1,1]', NULL)",
        (start + 60, start + 90),
    )
    db.commit()
    db.close()
    store = Store(state)
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 3
    assert store.visit_count_between(start, start + 86400) == 1
    store.add_uptime("2026-05-14", "feeder", 1, 2, 0)
    assert store.uptime("2026-05-14")["feeder"].total == 2
    store.close()
