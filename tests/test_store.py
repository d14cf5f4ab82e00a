"""The SQLite store on disk: queries that survive later migrations, crop files that fail
without losing visits, crop day folders in the configured zone, and an overflowing outbox
that is counted but logged once per episode."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from camtrap.storage.store import RollupRow, Store, Uptime, VisitRow
from camtrap.visits.tracker import VisitEvent
from tests.disks import fill, small_tmpfs
from tests.seed import crop_jpeg

START = datetime(2026, 5, 14, 11, 0, tzinfo=UTC).timestamp()


def event(n: int, *, kind: str = "end", species: str = "Great Tit", score: float = 0.9,
          crop: bytes | None = None) -> VisitEvent:
    start = START + 60 * n
    return VisitEvent(
        kind=kind,  # type: ignore[arg-type]
        visit_id=f"{n:016x}",
        camera="feeder",
        species=species,
        unknown=False,
        score=score,
        hits=3,
        start_ts=start,
        last_ts=start + 20,
        end_ts=start + 50 if kind == "end" else None,
        top_k=((species, score), ("House Sparrow", 0.05)),
        box=(10, 20, 240, 240),
        frame_size=(640, 360),
        crop_jpeg=crop_jpeg((30, 160, 60)) if crop is None else crop,
    )


def message(n: int) -> tuple[str, bytes, int, bool]:
    return ("camtrap/events", json.dumps({"n": n}).encode(), 1, False)


def expected_row(ev: VisitEvent, crop_file: str | None) -> VisitRow:
    return VisitRow(
        visit_id=ev.visit_id,
        camera=ev.camera,
        species=ev.species,
        unknown=ev.unknown,
        start_ts=ev.start_ts,
        last_ts=ev.last_ts,
        end_ts=ev.end_ts,
        best_score=ev.score,
        hits=ev.hits,
        top_k=[tuple(x) for x in ev.top_k],
        crop_file=crop_file,
    )


def logged(caplog: pytest.LogCaptureFixture, module: str, level: int) -> list[logging.LogRecord]:
    name = f"camtrap.storage.{module}"
    return [r for r in caplog.records if r.name == name and r.levelno == level]


# --- later migrations -------------------------------------------------------------------


def rebuild(db: sqlite3.Connection, table: str, extra: str | None) -> None:
    """Recreate `table` with its columns in reverse order (and `extra` in the middle), as a
    migration that rebuilds a table would; its rows and indexes are kept."""
    cols = db.execute(f"PRAGMA table_info({table})").fetchall()
    names = [c[1] for c in cols]
    defs = [
        f"{name} {type_}" + (" NOT NULL" if notnull else "")
        + (f" DEFAULT {default}" if default is not None else "")
        for _, name, type_, notnull, default, _ in reversed(cols)
    ]
    if extra is not None:
        defs.insert(len(defs) // 2, extra)
    pk = [c[1] for c in sorted(cols, key=lambda c: c[5]) if c[5]]
    indexes = [
        sql for (sql,) in db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
            " AND sql IS NOT NULL",
            (table,),
        )
    ]
    listed = ", ".join(names)
    db.executescript(
        f"""BEGIN;
        CREATE TABLE {table}_new ({", ".join(defs)}, PRIMARY KEY ({", ".join(pk)}));
        INSERT INTO {table}_new ({listed}) SELECT {listed} FROM {table};
        DROP TABLE {table};
        ALTER TABLE {table}_new RENAME TO {table};
        {"; ".join(indexes)};
        COMMIT;"""
    )


@pytest.mark.parametrize("change", ["column added", "rebuilt with a column inside", "reversed"])
def test_queries_survive_a_later_migration(tmp_path: Path, change: str) -> None:
    """A later schema (reviews, tracks) adds columns and may rebuild tables in another
    column order: every write and read names its columns, so none of them notices."""
    state = tmp_path / "state"
    store = Store(state, tz=UTC)
    before = event(0)
    store.record(before, [message(0)])
    day = "2026-05-14"
    store.replace_rollups(day, [RollupRow(day, "feeder", "Great Tit", False, 1, 3, 0.9, 1.0, 2.0)])
    store.add_uptime(day, "feeder", 10, 20, 5)
    store.close()

    db = sqlite3.connect(state / "camtrap.sqlite3")
    for table in ("visits", "daily_rollups", "camera_uptime", "outbox"):
        if change == "column added":
            db.execute(f"ALTER TABLE {table} ADD COLUMN reviewed INTEGER")
        else:
            extra = "reviewed INTEGER NOT NULL DEFAULT 0" if change != "reversed" else None
            rebuild(db, table, extra)
    db.commit()
    db.close()

    store = Store(state, tz=UTC)
    update = event(0, score=0.95)
    after = event(1, species="House Sparrow", crop=b"")
    store.record(update, [message(1)])
    store.record(after, [message(2)])
    crop = f"crops/{day}/feeder-{before.visit_id}.jpg"
    assert store.visits_between(0, 2e9) == [expected_row(update, crop), expected_row(after, None)]
    assert store.visits_between(0, 2e9, camera="ground") == []
    assert (state / crop).read_bytes() == update.crop_jpeg
    assert store.count_visits("feeder", 0) == store.visit_count_between(0, 2e9) == 2
    assert store.counts_between(0, 2e9) == [
        ("feeder", "Great Tit", 1),
        ("feeder", "House Sparrow", 1),
    ]
    assert store.last_seen_before("House Sparrow", 2e9) == after.start_ts
    assert store.oldest_visit_ts() == before.start_ts

    pending = store.pending(0, 10)
    assert [(m.topic, json.loads(m.payload)["n"], m.qos, m.retain) for m in pending] == [
        ("camtrap/events", n, 1, False) for n in range(3)
    ]
    store.ack(pending[0].id)
    assert store.outbox_len() == 2

    rows = [
        RollupRow(day, "feeder", "Great Tit", False, 2, 6, 0.95, START, START + 70),
        RollupRow(day, "ground", "Unknown bird", True, 1, 1, 0.4, START + 5, START + 9),
    ]
    assert store.rollups(day)[0].visits == 1
    store.replace_rollups(day, rows)
    assert store.rollups(day) == rows
    store.add_uptime(day, "feeder", 1, 2, 3)
    store.add_uptime(day, "ground", 4, 5, 6)
    assert store.uptime(day) == {"feeder": Uptime(11, 22, 8), "ground": Uptime(4, 5, 6)}

    assert store.delete_crops_before(START + 1) == 1
    assert store.visits_between(0, 2e9)[0].crop_file is None
    assert store.delete_visits_before(2e9) == (2, 0)
    assert store.delete_uptime_before("2026-05-15") == 2
    store.close()


# --- crop files -------------------------------------------------------------------------


def test_a_failed_crop_write_keeps_the_visit_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A regular file where the day folder must go makes mkdir fail with a real OSError:
    the visits and their messages are still stored, without a crop, and counted."""
    caplog.set_level(logging.INFO, logger="camtrap.storage")
    store = Store(tmp_path / "state", tz=UTC)
    events = [event(n) for n in range(5)]
    blocker = store.crop_path(events[0]).parent
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"not a folder")

    for n, ev in enumerate(events):
        store.record(ev, [message(n)])

    assert store.visits_between(0, 2e9) == [expected_row(ev, None) for ev in events]
    assert store.outbox_len() == 5
    assert store.crop_write_failures == 5
    (warning,) = logged(caplog, "crops", logging.WARNING)
    assert str(store.crops_dir) in warning.getMessage()
    assert "File exists" in warning.getMessage()
    assert not logged(caplog, "crops", logging.ERROR) and not logged(caplog, "crops", logging.INFO)

    blocker.unlink()
    again = event(5)
    store.record(again, [message(5)])
    store.record(event(6), [message(6)])
    (info,) = logged(caplog, "crops", logging.INFO)
    assert "again" in info.getMessage() and "5 could not be written" in info.getMessage()
    assert store.crop_write_failures == 5
    row = store.visits_between(again.start_ts, again.start_ts + 1)[0]
    assert row.crop_file is not None and (store.state_dir / row.crop_file).exists()
    store.close()


@pytest.fixture
def tiny_crops_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted where the store keeps its crops, so disk full is real."""
    with small_tmpfs(tmp_path / "state" / "crops", "64k") as crops:
        yield crops


def test_a_full_disk_keeps_the_previous_crop_and_leaves_no_temp_files(
    tiny_crops_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="camtrap.storage")
    store = Store(tiny_crops_fs.parent, tz=UTC)
    first = event(0, kind="start")
    store.record(first, [message(0)])
    (row,) = store.visits_between(0, 2e9)
    assert row.crop_file is not None
    filler = fill(tiny_crops_fs)

    better = event(0, kind="update", score=0.97, crop=crop_jpeg((200, 200, 40)))
    store.record(better, [message(1)])
    for n in range(1, 4):
        store.record(event(n), [message(n + 1)])

    rows = store.visits_between(0, 2e9)
    assert rows == [expected_row(better, row.crop_file)] + [
        expected_row(event(n), None) for n in range(1, 4)
    ]
    assert (store.state_dir / row.crop_file).read_bytes() == first.crop_jpeg
    assert not list(tiny_crops_fs.rglob("*.tmp"))
    assert store.outbox_len() == 5 and store.crop_write_failures == 4
    (warning,) = logged(caplog, "crops", logging.WARNING)
    assert "No space left on device" in warning.getMessage()

    filler.unlink()
    store.record(better, [message(9)])
    assert (store.state_dir / row.crop_file).read_bytes() == better.crop_jpeg
    assert len(logged(caplog, "crops", logging.INFO)) == 1
    store.close()


@pytest.fixture
def system_zone_pago_pago() -> Iterator[None]:
    """The process's local zone (what datetime.fromtimestamp uses) set to UTC-11."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Pago_Pago"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_crop_day_folders_follow_the_configured_zone(
    tmp_path: Path, system_zone_pago_pago: None
) -> None:
    """11:00 UTC on 14 May is the 14th for the system (UTC-11) but the 15th in the
    configured zone (UTC+14): the folder is the configured zone's day, as retention reads it."""
    ev = event(0)
    assert datetime.fromtimestamp(ev.start_ts).date().isoformat() == "2026-05-14"
    store = Store(tmp_path / "state", tz=ZoneInfo("Pacific/Kiritimati"))
    store.record(ev, [])
    assert store.crop_path(ev) == store.crops_dir / "2026-05-15" / f"feeder-{ev.visit_id}.jpg"
    (row,) = store.visits_between(0, 2e9)
    assert row.crop_file == f"crops/2026-05-15/feeder-{ev.visit_id}.jpg"
    assert (store.state_dir / row.crop_file).exists()
    store.close()


# --- outbox -----------------------------------------------------------------------------


def test_a_full_outbox_counts_every_drop_and_logs_once_per_episode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="camtrap.storage")
    store = Store(tmp_path / "state", outbox_max=20, save_crops=False)
    for n in range(40):
        store.record(event(n), [message(n)])
    assert store.outbox_len() == 20 and store.outbox_dropped == 20
    assert len(logged(caplog, "store", logging.ERROR)) == 1

    # one message delivered is not "below the bound again": that needs a tenth free
    store.ack(store.pending(0, 1)[0].id)
    store.record(event(40), [message(40)])
    store.record(event(41), [message(41)])
    assert store.outbox_dropped == 21
    assert len(logged(caplog, "store", logging.ERROR)) == 1
    assert not logged(caplog, "store", logging.INFO)

    for m in store.pending(0, 100):
        store.ack(m.id)
    assert store.outbox_len() == 0
    (info,) = logged(caplog, "store", logging.INFO)
    assert "below its bound again" in info.getMessage() and "21 dropped" in info.getMessage()

    for n in range(42, 67):  # a new episode: 5 over
        store.record(event(n), [message(n)])
    assert store.outbox_dropped == 26
    assert len(logged(caplog, "store", logging.ERROR)) == 2
    assert [json.loads(m.payload)["n"] for m in store.pending(0, 100)] == list(range(47, 67))
    store.close()


def test_readers_get_a_connection_of_their_own_that_cannot_write(tmp_path: Path) -> None:
    store = Store(tmp_path / "state", save_crops=False)
    store.record(event(0), [message(0)])
    reader = Store.open_readonly(store.state_dir)
    try:
        row = reader.execute("SELECT visit_id, species FROM visits").fetchone()
        assert (row["visit_id"], row["species"]) == (event(0).visit_id, "Great Tit")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("DELETE FROM outbox")
        store.record(event(1), [message(1)])  # the writer is not blocked by the reader
        assert reader.execute("SELECT COUNT(*) AS n FROM visits").fetchone()["n"] == 2
    finally:
        reader.close()
        store.close()


def test_a_visit_keeps_its_embedding_and_context_frame_until_retention(tmp_path: Path) -> None:
    store = Store(tmp_path / "state", tz=UTC)
    vector = np.linspace(-1, 1, 384, dtype=np.float32)
    ev = dataclasses.replace(event(1, kind="start"), embedding=vector,
                             context_jpeg=crop_jpeg((90, 90, 90), size=480))
    store.record(ev, [])
    store.record(dataclasses.replace(ev, kind="end", end_ts=ev.start_ts + 5, embedding=None,
                                     context_jpeg=None), [])
    ro = Store.open_readonly(tmp_path / "state")
    row = ro.execute("SELECT embedding, context_file FROM visits").fetchone()
    ro.close()
    assert np.array_equal(np.frombuffer(row["embedding"], "<f4"), vector)
    context = tmp_path / "state" / row["context_file"]
    assert context.read_bytes() == ev.context_jpeg  # an update without one keeps it
    assert row["context_file"].endswith(f"{ev.camera}-{ev.visit_id}-context.jpg")
    _, files = store.delete_visits_before(ev.start_ts + 1)
    assert files == 2 and not context.exists()
    store.close()
