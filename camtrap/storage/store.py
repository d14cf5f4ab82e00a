"""SQLite history and MQTT outbox: one file under the state directory, WAL, one writer.

A visit event and its outbox message are written in one transaction, so an event is either
both recorded and queued for MQTT, or neither. Best crops are JPEG files beside the database.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from camtrap.visits.tracker import VisitEvent

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE visits (
        visit_id   TEXT PRIMARY KEY,
        camera     TEXT NOT NULL,
        species    TEXT NOT NULL,
        unknown    INTEGER NOT NULL,
        start_ts   REAL NOT NULL,
        last_ts    REAL NOT NULL,
        end_ts     REAL,
        best_score REAL NOT NULL,
        hits       INTEGER NOT NULL,
        top_k      TEXT NOT NULL,
        box        TEXT NOT NULL,
        crop_file  TEXT
    );
    CREATE INDEX visits_start ON visits (start_ts);
    CREATE INDEX visits_camera_species ON visits (camera, species);
    CREATE TABLE outbox (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        topic   TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos     INTEGER NOT NULL,
        retain  INTEGER NOT NULL,
        created REAL NOT NULL
    );
    """,
    # Daily per camera+species rollups outlive deleted visits (retention), so "first ever"
    # and "first this year" stay right; camera_uptime feeds the nightly summary.
    2: """
    CREATE TABLE daily_rollups (
        day        TEXT NOT NULL,
        camera     TEXT NOT NULL,
        species    TEXT NOT NULL,
        unknown    INTEGER NOT NULL,
        visits     INTEGER NOT NULL,
        hits       INTEGER NOT NULL,
        best_score REAL NOT NULL,
        first_ts   REAL NOT NULL,
        last_ts    REAL NOT NULL,
        PRIMARY KEY (day, camera, species)
    );
    CREATE INDEX daily_rollups_species ON daily_rollups (species, first_ts);
    CREATE INDEX visits_species_start ON visits (species, start_ts);
    CREATE TABLE camera_uptime (
        day            TEXT NOT NULL,
        camera         TEXT NOT NULL,
        seconds_up     REAL NOT NULL DEFAULT 0,
        seconds_total  REAL NOT NULL DEFAULT 0,
        seconds_paused REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (day, camera)
    );
    """,
}


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True)
class RollupRow:
    """One camera+species on one local day (YYYY-MM-DD)."""

    day: str
    camera: str
    species: str
    unknown: bool
    visits: int
    hits: int
    best_score: float
    first_ts: float
    last_ts: float


@dataclass(frozen=True)
class Uptime:
    """Seconds one camera was watched on one day: `total` while it should have been
    running (daemon up, inside active hours), `up` of those connected, `paused` outside
    its active hours."""

    up: float
    total: float
    paused: float


@dataclass(frozen=True)
class VisitRow:
    visit_id: str
    camera: str
    species: str
    unknown: bool
    start_ts: float
    last_ts: float
    end_ts: float | None
    best_score: float
    hits: int
    top_k: list[tuple[str, float]]
    crop_file: str | None


class Store:
    def __init__(self, state_dir: Path, outbox_max: int = 10_000, save_crops: bool = True) -> None:
        self.state_dir = Path(state_dir)
        self.crops_dir = self.state_dir / "crops"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / "camtrap.sqlite3"
        self.outbox_max = outbox_max
        self.save_crops = save_crops
        self.outbox_dropped = 0
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise OSError(f"{self.path}: cannot open the database: {exc}") from None

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this camtrap ({SCHEMA_VERSION})"
            )
        for v in range(version + 1, SCHEMA_VERSION + 1):
            with self._lock:  # executescript commits on its own: the script is the transaction
                self._db.executescript(
                    f"BEGIN IMMEDIATE; {_MIGRATIONS[v]}; PRAGMA user_version = {v}; COMMIT;"
                )
            log.info("migrated %s to schema %d", self.path, v)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def crop_path(self, event: VisitEvent) -> Path:
        day = datetime.fromtimestamp(event.start_ts).strftime("%Y-%m-%d")
        return self.crops_dir / day / f"{event.camera}-{event.visit_id}.jpg"

    def record(self, event: VisitEvent, messages: list[tuple[str, bytes, int, bool]]) -> None:
        """Upsert the visit and queue its MQTT messages, atomically."""
        crop_file: str | None = None
        if self.save_crops and event.crop_jpeg:
            path = self.crop_path(event)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(event.crop_jpeg)
            tmp.replace(path)
            crop_file = str(path.relative_to(self.state_dir))
        now = time.time()
        with self._tx() as db:
            db.execute(
                """INSERT INTO visits VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
                ON CONFLICT (visit_id) DO UPDATE SET last_ts=excluded.last_ts,
                  end_ts=excluded.end_ts, best_score=excluded.best_score, hits=excluded.hits,
                  top_k=excluded.top_k, box=excluded.box, crop_file=excluded.crop_file""",
                (
                    event.visit_id,
                    event.camera,
                    event.species,
                    int(event.unknown),
                    event.start_ts,
                    event.last_ts,
                    event.end_ts,
                    event.score,
                    event.hits,
                    json.dumps(event.top_k),
                    json.dumps(event.box),
                    crop_file,
                ),
            )
            db.executemany(
                "INSERT INTO outbox (topic, payload, qos, retain, created) VALUES (?,?,?,?,?)",
                [(t, p, q, int(r), now) for t, p, q, r in messages],
            )
            self._bound_outbox(db)

    def _bound_outbox(self, db: sqlite3.Connection) -> None:
        (count,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        excess = count - self.outbox_max
        if excess > 0:
            db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                (excess,),
            )
            self.outbox_dropped += excess
            log.error("outbox full (%d messages): dropped the %d oldest", self.outbox_max, excess)

    def pending(self, after_id: int, limit: int) -> list[OutboxMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain FROM outbox"
                " WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [OutboxMessage(i, t, bytes(p), q, bool(r)) for i, t, p, q, r in rows]

    def ack(self, message_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (message_id,))

    def outbox_len(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def visits_between(
        self, start_ts: float, end_ts: float, camera: str | None = None
    ) -> list[VisitRow]:
        sql = "SELECT * FROM visits WHERE start_ts >= ? AND start_ts < ?"
        args: list[object] = [start_ts, end_ts]
        if camera is not None:
            sql += " AND camera = ?"
            args.append(camera)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY start_ts", args).fetchall()
        return [
            VisitRow(
                visit_id=r[0],
                camera=r[1],
                species=r[2],
                unknown=bool(r[3]),
                start_ts=r[4],
                last_ts=r[5],
                end_ts=r[6],
                best_score=r[7],
                hits=r[8],
                top_k=[tuple(x) for x in json.loads(r[9])],
                crop_file=r[11],
            )
            for r in rows
        ]

    def count_visits(self, camera: str, since_ts: float) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM visits WHERE camera = ? AND start_ts >= ?", (camera, since_ts)
            ).fetchone()[0]

    # --- summaries, rollups, uptime and retention (scheduler.py, summary.py) -------------

    def visit_count_between(self, start_ts: float, end_ts: float) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM visits WHERE start_ts >= ? AND start_ts < ?",
                (start_ts, end_ts),
            ).fetchone()[0]

    def counts_between(self, start_ts: float, end_ts: float) -> list[tuple[str, str, int]]:
        """(camera, species, visits) that started in [start_ts, end_ts): the digest."""
        with self._lock:
            return self._db.execute(
                "SELECT camera, species, COUNT(*) FROM visits"
                " WHERE start_ts >= ? AND start_ts < ?"
                " GROUP BY camera, species ORDER BY camera, species",
                (start_ts, end_ts),
            ).fetchall()

    def last_seen_before(self, species: str, before_ts: float) -> float | None:
        """Start of the latest sighting of a (named, not unknown-tier) species before
        `before_ts`, from visits and from rollups of deleted visits; None: never seen."""
        with self._lock:
            a = self._db.execute(
                "SELECT MAX(start_ts) FROM visits WHERE species = ? AND start_ts < ?"
                " AND unknown = 0",
                (species, before_ts),
            ).fetchone()[0]
            b = self._db.execute(
                "SELECT MAX(first_ts) FROM daily_rollups WHERE species = ? AND first_ts < ?"
                " AND unknown = 0",
                (species, before_ts),
            ).fetchone()[0]
        seen = [t for t in (a, b) if t is not None]
        return max(seen) if seen else None

    def oldest_visit_ts(self) -> float | None:
        with self._lock:
            return self._db.execute("SELECT MIN(start_ts) FROM visits").fetchone()[0]

    def replace_rollups(self, day: str, rows: list[RollupRow]) -> None:
        """The day's rollups become `rows` (a day is always rolled up whole)."""
        with self._tx() as db:
            db.execute("DELETE FROM daily_rollups WHERE day = ?", (day,))
            db.executemany(
                "INSERT INTO daily_rollups VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        r.day,
                        r.camera,
                        r.species,
                        int(r.unknown),
                        r.visits,
                        r.hits,
                        r.best_score,
                        r.first_ts,
                        r.last_ts,
                    )
                    for r in rows
                ],
            )

    def rollups(self, day: str) -> list[RollupRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM daily_rollups WHERE day = ? ORDER BY camera, species", (day,)
            ).fetchall()
        return [RollupRow(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6], r[7], r[8]) for r in rows]

    def add_uptime(self, day: str, camera: str, up: float, total: float, paused: float) -> None:
        with self._tx() as db:
            db.execute(
                """INSERT INTO camera_uptime VALUES (?,?,?,?,?)
                ON CONFLICT (day, camera) DO UPDATE SET
                  seconds_up = seconds_up + excluded.seconds_up,
                  seconds_total = seconds_total + excluded.seconds_total,
                  seconds_paused = seconds_paused + excluded.seconds_paused""",
                (day, camera, up, total, paused),
            )

    def uptime(self, day: str) -> dict[str, Uptime]:
        with self._lock:
            rows = self._db.execute(
                "SELECT camera, seconds_up, seconds_total, seconds_paused FROM camera_uptime"
                " WHERE day = ? ORDER BY camera",
                (day,),
            ).fetchall()
        return {c: Uptime(up, total, paused) for c, up, total, paused in rows}

    def _unlink_crops(self, files: list[str]) -> int:
        removed = 0
        for rel in files:
            path = self.state_dir / rel
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("retention: cannot delete %s: %s", path, exc)
        return removed

    def delete_visits_before(self, ts: float) -> tuple[int, int]:
        """Delete visits that started before `ts` and their crop files; returns (visits,
        crop files). Rows go first: a crash in between leaves orphan files, which the crop
        sweep removes, never rows that point at missing files."""
        with self._tx() as db:
            files = [
                f
                for (f,) in db.execute(
                    "SELECT crop_file FROM visits WHERE start_ts < ? AND crop_file IS NOT NULL",
                    (ts,),
                )
            ]
            n = db.execute("DELETE FROM visits WHERE start_ts < ?", (ts,)).rowcount
        return n, self._unlink_crops(files)

    def delete_crops_before(self, ts: float) -> int:
        """Delete the crop files of visits that started before `ts`; the visits stay."""
        with self._tx() as db:
            files = [
                f
                for (f,) in db.execute(
                    "SELECT crop_file FROM visits WHERE start_ts < ? AND crop_file IS NOT NULL",
                    (ts,),
                )
            ]
            db.execute(
                "UPDATE visits SET crop_file = NULL WHERE start_ts < ? AND crop_file IS NOT NULL",
                (ts,),
            )
        return self._unlink_crops(files)

    def delete_uptime_before(self, day: str) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM camera_uptime WHERE day < ?", (day,)).rowcount
