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

from camtrap.visits import VisitEvent

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

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
}


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


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
