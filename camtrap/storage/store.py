"""SQLite history and MQTT outbox: one file under the state directory, WAL, one writer.

A visit event and its outbox messages are written in one transaction, so an event is either
both recorded and queued for MQTT, or neither. Best crops are JPEG files beside the database
(crops.py); the schema, migrations and transactions are in db.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any

from camtrap.storage.crops import CropFiles
from camtrap.storage.db import (
    _MIGRATIONS,
    DB_FILE,
    SCHEMA_VERSION,
    connect,
    connect_readonly,
    transaction,
)
from camtrap.storage.reviewing import (
    COUNTED,
    EFFECTIVE_SPECIES,
    EFFECTIVE_UNKNOWN,
    REVIEWED_COLUMNS,
    ReviewMessages,
    apply_reviews,
    reviewed_visit,
)
from camtrap.timeutil import resolve_tz
from camtrap.visits import reviews
from camtrap.visits.reviews import ReviewedVisit, ReviewOutcome
from camtrap.visits.tracker import VisitEvent

__all__ = [
    "COUNTED",
    "EFFECTIVE_SPECIES",
    "SCHEMA_VERSION",
    "_MIGRATIONS",
    "OutboxMessage",
    "RollupRow",
    "Store",
    "Uptime",
    "VisitRow",
]

log = logging.getLogger(__name__)


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


_VISIT_COLUMNS = (
    "visit_id, camera, species, unknown, start_ts, last_ts, end_ts, best_score, hits, top_k,"
    " crop_file"
)
_ROLLUP_COLUMNS = "day, camera, species, unknown, visits, hits, best_score, first_ts, last_ts"
# Reviews (schema 4, storage/reviewing.py): summaries, rollups and counts read the visits
# that count as birds (COUNTED) under their effective species and tier.
_EFFECTIVE_COLUMNS = (
    f"visit_id, camera, {EFFECTIVE_SPECIES} AS species, {EFFECTIVE_UNKNOWN} AS unknown,"
    " start_ts, last_ts, end_ts, best_score, hits, top_k, crop_file"
)


def _visit_row(r: sqlite3.Row) -> VisitRow:
    return VisitRow(
        visit_id=r["visit_id"],
        camera=r["camera"],
        species=r["species"],
        unknown=bool(r["unknown"]),
        start_ts=r["start_ts"],
        last_ts=r["last_ts"],
        end_ts=r["end_ts"],
        best_score=r["best_score"],
        hits=r["hits"],
        top_k=[tuple(x) for x in json.loads(r["top_k"])],
        crop_file=r["crop_file"],
    )


def _rollup_row(r: sqlite3.Row) -> RollupRow:
    return RollupRow(
        day=r["day"],
        camera=r["camera"],
        species=r["species"],
        unknown=bool(r["unknown"]),
        visits=r["visits"],
        hits=r["hits"],
        best_score=r["best_score"],
        first_ts=r["first_ts"],
        last_ts=r["last_ts"],
    )


class Store:
    """`tz` names the crop day folders (the configured `schedule.timezone`, which retention
    reads them in); None: the system's zone, as `resolve_tz(None)` gives the scheduler."""

    def __init__(
        self,
        state_dir: Path,
        outbox_max: int = 10_000,
        save_crops: bool = True,
        *,
        tz: tzinfo | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"storage.state_dir: cannot create {self.state_dir}: {exc.strerror}"
                          ) from None
        self.path = self.state_dir / DB_FILE
        self.tz = tz if tz is not None else resolve_tz(None)
        self._crops = CropFiles(self.state_dir, self.tz)
        self.crops_dir = self._crops.root
        self.outbox_max = outbox_max
        self.save_crops = save_crops
        self.outbox_dropped = 0
        self._outbox_full_since: int | None = None  # outbox_dropped when the overflow began
        self._lock = threading.Lock()
        self._db = connect(self.path)

    @staticmethod
    def open_readonly(state_dir: Path) -> sqlite3.Connection:
        """A read-only connection of the caller's own to the database in `state_dir`
        (rows by name), for readers that must never slow the daemon's writes."""
        return connect_readonly(Path(state_dir) / DB_FILE)

    @property
    def crop_write_failures(self) -> int:
        """Best crops that could not be written since this Store was opened."""
        return self._crops.write_failures

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, self._lock)

    def _value(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """The one value of a query that selects one, named `value`."""
        with self._lock:
            return self._db.execute(sql, args).fetchone()["value"]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def crop_path(self, event: VisitEvent) -> Path:
        return self._crops.path(event)

    def record(self, event: VisitEvent, messages: list[tuple[str, bytes, int, bool]]) -> None:
        """Upsert the visit and queue its MQTT messages, atomically. The crop is best
        effort: when it cannot be written the visit keeps its previous crop, if any."""
        crop_file = context_file = None
        if self.save_crops and event.crop_jpeg:
            # Files before row: a crash in between leaves an orphan file (the crop sweep
            # removes it), never a row naming a missing file.
            crop_file = self._crops.save(event, event.crop_jpeg)
            if event.context_jpeg:
                context_file = self._crops.save(event, event.context_jpeg, "-context")
        embedding = None if event.embedding is None else event.embedding.astype("<f4").tobytes()
        now = time.time()
        with self._tx() as db:
            db.execute(
                f"""INSERT INTO visits ({_VISIT_COLUMNS}, box, embedding, context_file,
                  frame_size)
                VALUES (:visit_id, :camera, :species, :unknown, :start_ts, :last_ts, :end_ts,
                  :best_score, :hits, :top_k, :crop_file, :box, :embedding, :context_file,
                  :frame_size)
                ON CONFLICT (visit_id) DO UPDATE SET last_ts=excluded.last_ts,
                  end_ts=excluded.end_ts, best_score=excluded.best_score, hits=excluded.hits,
                  top_k=excluded.top_k, box=excluded.box, frame_size=excluded.frame_size,
                  crop_file=COALESCE(excluded.crop_file, crop_file),
                  embedding=COALESCE(excluded.embedding, embedding),
                  context_file=COALESCE(excluded.context_file, context_file)""",
                {
                    "visit_id": event.visit_id,
                    "camera": event.camera,
                    "species": event.species,
                    "unknown": int(event.unknown),
                    "start_ts": event.start_ts,
                    "last_ts": event.last_ts,
                    "end_ts": event.end_ts,
                    "best_score": event.score,
                    "hits": event.hits,
                    "top_k": json.dumps(event.top_k),
                    "crop_file": crop_file,
                    "box": json.dumps(event.box),
                    "frame_size": json.dumps(event.frame_size),
                    "embedding": embedding,
                    "context_file": context_file,
                },
            )
            db.executemany(
                "INSERT INTO outbox (topic, payload, qos, retain, created) VALUES (?,?,?,?,?)",
                [(t, p, q, int(r), now) for t, p, q, r in messages],
            )
            self._bound_outbox(db)

    def _bound_outbox(self, db: sqlite3.Connection) -> None:
        """Drop the oldest messages past `outbox_max`, counting them. While the broker is
        away every event overflows: that is logged when it begins, not at every event."""
        count = db.execute("SELECT COUNT(*) AS n FROM outbox").fetchone()["n"]
        excess = count - self.outbox_max
        if excess <= 0:
            return
        db.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
            (excess,),
        )
        if self._outbox_full_since is None:
            self._outbox_full_since = self.outbox_dropped
            log.error(
                "outbox full (%d messages): dropping the oldest while it stays full"
                " (counted as outbox_dropped)",
                self.outbox_max,
            )
        self.outbox_dropped += excess

    def _outbox_low_water(self) -> int:
        """Below its bound "again" means a tenth of it free, so an outbox that drains
        about as fast as it fills does not make the log flap."""
        return self.outbox_max * 9 // 10

    def _check_outbox_drained(self, db: sqlite3.Connection) -> None:
        if self._outbox_full_since is None:
            return
        count = db.execute("SELECT COUNT(*) AS n FROM outbox").fetchone()["n"]
        if count <= self._outbox_low_water():
            log.info(
                "outbox below its bound again (%d of %d messages); %d dropped while full",
                count,
                self.outbox_max,
                self.outbox_dropped - self._outbox_full_since,
            )
            self._outbox_full_since = None

    def pending(self, after_id: int, limit: int) -> list[OutboxMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain FROM outbox"
                " WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [
            OutboxMessage(r["id"], r["topic"], bytes(r["payload"]), r["qos"], bool(r["retain"]))
            for r in rows
        ]

    def ack(self, message_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (message_id,))
            self._check_outbox_drained(db)

    def outbox_len(self) -> int:
        return self._value("SELECT COUNT(*) AS value FROM outbox")

    def visits_between(
        self, start_ts: float, end_ts: float, camera: str | None = None
    ) -> list[VisitRow]:
        """Visits that count as birds (not deleted, not rejected) with their effective
        species and tier: what summaries, rollups and retention's rollups read."""
        sql = (
            f"SELECT {_EFFECTIVE_COLUMNS} FROM visits WHERE start_ts >= ? AND start_ts < ?"
            f" AND {COUNTED}"
        )
        args: list[object] = [start_ts, end_ts]
        if camera is not None:
            sql += " AND camera = ?"
            args.append(camera)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY start_ts", args).fetchall()
        return [_visit_row(r) for r in rows]

    def count_visits(self, camera: str, since_ts: float) -> int:
        return self._value(
            f"SELECT COUNT(*) AS value FROM visits WHERE camera = ? AND start_ts >= ?"
            f" AND {COUNTED}",
            (camera, since_ts),
        )

    # --- summaries, rollups, uptime and retention (scheduler.py, summary.py) -------------

    def visit_count_between(self, start_ts: float, end_ts: float) -> int:
        return self._value(
            f"SELECT COUNT(*) AS value FROM visits WHERE start_ts >= ? AND start_ts < ?"
            f" AND {COUNTED}",
            (start_ts, end_ts),
        )

    def counts_between(self, start_ts: float, end_ts: float) -> list[tuple[str, str, int]]:
        """(camera, species, visits) that started in [start_ts, end_ts): the digest."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT camera, {EFFECTIVE_SPECIES} AS species, COUNT(*) AS visits"
                f" FROM visits WHERE start_ts >= ? AND start_ts < ? AND {COUNTED}"
                " GROUP BY camera, 2 ORDER BY camera, 2",
                (start_ts, end_ts),
            ).fetchall()
        return [(r["camera"], r["species"], r["visits"]) for r in rows]

    def last_seen_before(self, species: str, before_ts: float) -> float | None:
        """Start of the latest sighting of a (named, not unknown-tier) species before
        `before_ts`, from visits and from rollups of deleted visits; None: never seen."""
        with self._lock:
            a = self._db.execute(
                f"SELECT MAX(start_ts) AS value FROM visits WHERE {EFFECTIVE_SPECIES} = ?"
                f" AND start_ts < ? AND {COUNTED}"
                " AND (unknown = 0 OR reviewed_species IS NOT NULL)",
                (species, before_ts),
            ).fetchone()["value"]
            b = self._db.execute(
                "SELECT MAX(first_ts) AS value FROM daily_rollups"
                " WHERE species = ? AND first_ts < ? AND unknown = 0",
                (species, before_ts),
            ).fetchone()["value"]
        seen = [t for t in (a, b) if t is not None]
        return max(seen) if seen else None

    def oldest_visit_ts(self) -> float | None:
        """The oldest visit retention may delete (kept visits are exempt)."""
        return self._value("SELECT MIN(start_ts) AS value FROM visits WHERE keep = 0")

    def replace_rollups(self, day: str, rows: list[RollupRow]) -> None:
        """The day's rollups become `rows` (a day is always rolled up whole)."""
        with self._tx() as db:
            db.execute("DELETE FROM daily_rollups WHERE day = ?", (day,))
            db.executemany(
                f"INSERT INTO daily_rollups ({_ROLLUP_COLUMNS}) VALUES (:day, :camera, :species,"
                " :unknown, :visits, :hits, :best_score, :first_ts, :last_ts)",
                [{**asdict(r), "unknown": int(r.unknown)} for r in rows],
            )

    def rollups(self, day: str) -> list[RollupRow]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ROLLUP_COLUMNS} FROM daily_rollups WHERE day = ?"
                " ORDER BY camera, species",
                (day,),
            ).fetchall()
        return [_rollup_row(r) for r in rows]

    def add_uptime(
        self,
        day: str,
        camera: str,
        up: float,
        total: float,
        paused: float,
        hours: Sequence[tuple[int, float, float, float]] = (),
    ) -> None:
        """Add seconds to a camera's day; `hours` splits them by local hour (hour, up,
        total, paused) for the web day grid's down and paused hours."""
        with self._tx() as db:
            db.execute(
                """INSERT INTO camera_uptime
                  (day, camera, seconds_up, seconds_total, seconds_paused)
                VALUES (?,?,?,?,?)
                ON CONFLICT (day, camera) DO UPDATE SET
                  seconds_up = seconds_up + excluded.seconds_up,
                  seconds_total = seconds_total + excluded.seconds_total,
                  seconds_paused = seconds_paused + excluded.seconds_paused""",
                (day, camera, up, total, paused),
            )
            db.executemany(
                """INSERT INTO camera_uptime_hours
                  (day, hour, camera, seconds_up, seconds_total, seconds_paused)
                VALUES (?,?,?,?,?,?)
                ON CONFLICT (day, hour, camera) DO UPDATE SET
                  seconds_up = seconds_up + excluded.seconds_up,
                  seconds_total = seconds_total + excluded.seconds_total,
                  seconds_paused = seconds_paused + excluded.seconds_paused""",
                [(day, h, camera, u, t, p) for h, u, t, p in hours],
            )

    def uptime(self, day: str) -> dict[str, Uptime]:
        with self._lock:
            rows = self._db.execute(
                "SELECT camera, seconds_up, seconds_total, seconds_paused FROM camera_uptime"
                " WHERE day = ? ORDER BY camera",
                (day,),
            ).fetchall()
        return {
            r["camera"]: Uptime(r["seconds_up"], r["seconds_total"], r["seconds_paused"])
            for r in rows
        }

    def _crop_files_before(self, db: sqlite3.Connection, ts: float) -> list[str]:
        """Every image file of the visits that started before `ts` (crops, context frames)."""
        rows = db.execute(
            "SELECT crop_file, context_file FROM visits WHERE start_ts < ? AND keep = 0"
            " AND (crop_file IS NOT NULL OR context_file IS NOT NULL)", (ts,)
        )
        return [f for r in rows for f in (r["crop_file"], r["context_file"]) if f]

    def delete_visits_before(self, ts: float) -> tuple[int, int]:
        """Delete visits that started before `ts` and their crop files, soft-deleted ones
        included, kept ones not; returns (visits, crop files). Rows go first: a crash in
        between leaves orphan files, which the crop sweep removes, never rows that point
        at missing files."""
        with self._tx() as db:
            files = self._crop_files_before(db, ts)
            n = db.execute("DELETE FROM visits WHERE start_ts < ? AND keep = 0", (ts,)).rowcount
        return n, self._crops.unlink(files)

    def delete_crops_before(self, ts: float) -> int:
        """Delete the crop files of visits that started before `ts` (not kept ones); the
        visits stay."""
        with self._tx() as db:
            files = self._crop_files_before(db, ts)
            db.execute(
                "UPDATE visits SET crop_file = NULL, context_file = NULL WHERE start_ts < ?"
                " AND keep = 0 AND (crop_file IS NOT NULL OR context_file IS NOT NULL)",
                (ts,),
            )
        return self._crops.unlink(files)

    def delete_uptime_before(self, day: str) -> int:
        with self._tx() as db:
            db.execute("DELETE FROM camera_uptime_hours WHERE day < ?", (day,))
            return db.execute("DELETE FROM camera_uptime WHERE day < ?", (day,)).rowcount

    def kept_files(self) -> set[str]:
        """Image files of kept visits, relative to the state directory: the crop sweep of
        old day folders leaves these."""
        with self._lock:
            rows = self._db.execute(
                "SELECT crop_file, context_file FROM visits WHERE keep = 1"
            ).fetchall()
        return {f for r in rows for f in (r["crop_file"], r["context_file"]) if f}

    # --- reviews (camtrap/visits/reviews.py, camtrap/web/reviewer.py) --------------------

    def review(
        self,
        visit_id: str,
        action: str,
        species: str | None = None,
        user: str | None = None,
        note: str | None = None,
        *,
        now: float | None = None,
        messages: ReviewMessages | None = None,
    ) -> ReviewOutcome:
        """Apply one review: the visit's row, a `reviews` row and the messages
        `messages(outcome)` makes (the MQTT `review` event) in one transaction, so a review
        is either everywhere or nowhere. Raises KeyError for an unknown visit and
        ReviewError for a review the rules refuse (nothing is written then)."""
        outcomes, failed = self.review_many([visit_id], action, species, user, note, now=now,
                                            messages=messages)
        if failed:
            raise failed[visit_id]
        return outcomes[0]

    def review_many(
        self,
        visit_ids: Sequence[str],
        action: str,
        species: str | None = None,
        user: str | None = None,
        note: str | None = None,
        *,
        now: float | None = None,
        messages: ReviewMessages | None = None,
    ) -> tuple[list[ReviewOutcome], dict[str, Exception]]:
        """The same review on many visits in one transaction (with the day's rollups, see
        reviewing.py). A visit the rules refuse (or that does not exist) is left as it is
        and reported; the others are applied."""
        reviews.check(action, species, note)
        now = time.time() if now is None else now
        with self._tx() as db:
            done, failed = apply_reviews(db, self.tz, visit_ids, action, species, user, note,
                                         now, time.time(), messages)
            if messages is not None and done:
                self._bound_outbox(db)
        return done, failed

    def latest_visit_id(self, camera: str) -> str | None:
        """The camera's latest visit (by start) that counts as a bird: the one its
        retained `species` topic shows."""
        with self._lock:
            row = self._db.execute(
                f"SELECT visit_id FROM visits WHERE camera = ? AND {COUNTED}"
                " ORDER BY start_ts DESC, visit_id DESC LIMIT 1",
                (camera,),
            ).fetchone()
        return None if row is None else row["visit_id"]

    def reviewed_visit(self, visit_id: str) -> ReviewedVisit | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {REVIEWED_COLUMNS} FROM visits WHERE visit_id = ?", (visit_id,)
            ).fetchone()
        return None if row is None else reviewed_visit(row)
