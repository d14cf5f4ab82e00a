"""The SQLite file under the state directory: its schema, migrations, connections and
transactions. Queries live in store.py; they name every column, so a migration that adds a
column, or rebuilds a table in another column order, breaks none of them."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

DB_FILE = "camtrap.sqlite3"

SCHEMA_VERSION = 5

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
    # What the web interface shows beside a visit: the best crop's embedding (float32,
    # little-endian; "similar visits") and a downscaled frame the crop was cut from.
    3: """
    ALTER TABLE visits ADD COLUMN embedding BLOB;
    ALTER TABLE visits ADD COLUMN context_file TEXT;
    """,
    # Reviews (camtrap/visits/reviews.py): a person's verdict beside the model's. The
    # effective species is COALESCE(reviewed_species, species), indexed as an expression
    # (queries spell it so: store.EFFECTIVE_SPECIES); deleting is soft (deleted_ts) until
    # retention, and `keep` exempts a visit from retention. `reviews` is the history (it
    # outlives its visits: the per-species accuracy reads it); model_species is what the
    # model said when the review was made. frame_size ([w, h], JSON) places the box on
    # the context frame.
    4: """
    ALTER TABLE visits ADD COLUMN status TEXT NOT NULL DEFAULT 'unreviewed';
    ALTER TABLE visits ADD COLUMN reviewed_species TEXT;
    ALTER TABLE visits ADD COLUMN keep INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE visits ADD COLUMN deleted_ts REAL;
    ALTER TABLE visits ADD COLUMN review_ts REAL;
    ALTER TABLE visits ADD COLUMN review_user TEXT;
    ALTER TABLE visits ADD COLUMN frame_size TEXT;
    CREATE TABLE reviews (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        visit_id      TEXT NOT NULL,
        ts            REAL NOT NULL,
        user          TEXT,
        action        TEXT NOT NULL,
        old_species   TEXT,
        new_species   TEXT,
        note          TEXT,
        model_species TEXT
    );
    CREATE INDEX reviews_visit ON reviews (visit_id, id);
    CREATE INDEX reviews_model_species ON reviews (model_species);
    CREATE INDEX visits_status_start ON visits (status, start_ts);
    CREATE INDEX visits_eff_species_start
        ON visits (COALESCE(reviewed_species, species), start_ts);
    CREATE INDEX visits_camera_start ON visits (camera, start_ts);
    CREATE INDEX visits_deleted ON visits (deleted_ts) WHERE deleted_ts IS NOT NULL;
    CREATE INDEX visits_kept ON visits (start_ts) WHERE keep = 1;
    """,
    # camera_uptime by local hour, so the web day grid tells "no birds" from "not
    # watching" hour by hour (camera_uptime keeps the day's totals for the summary); and a
    # covering index of the visits that count by effective species, so a species page or
    # a species list reads no table rows (spelt as store.COUNTED and EFFECTIVE_SPECIES).
    5: """
    CREATE TABLE camera_uptime_hours (
        day            TEXT NOT NULL,
        hour           INTEGER NOT NULL,
        camera         TEXT NOT NULL,
        seconds_up     REAL NOT NULL DEFAULT 0,
        seconds_total  REAL NOT NULL DEFAULT 0,
        seconds_paused REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (day, hour, camera)
    );
    CREATE INDEX visits_counted_species
        ON visits (COALESCE(reviewed_species, species), start_ts, camera, best_score, visit_id)
        WHERE deleted_ts IS NULL AND status != 'rejected';
    """,
}


def connect(path: Path) -> sqlite3.Connection:
    """The daemon's one writer connection, migrated to SCHEMA_VERSION. Autocommit mode
    (isolation_level=None): every transaction is begun explicitly by `transaction`.
    Raises OSError naming the file when it is not a usable camtrap database."""
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.OperationalError as exc:
        raise _unreachable(path, exc) from None
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        _migrate(db, path)
    except sqlite3.OperationalError as exc:  # access, not content: a read-only folder
        db.close()
        raise _unreachable(path, exc) from None
    except sqlite3.DatabaseError as exc:  # content: truncated, or not SQLite at all
        db.close()
        raise OSError(
            f"{path}: cannot open the database: {exc}. It is left as it is; to start with an"
            f" empty history, move it aside (mv {path} {path}.broken) and start again"
        ) from None
    return db


def _unreachable(path: Path, exc: sqlite3.Error) -> OSError:
    return OSError(f"{path}: cannot open the database ({exc}): is its folder writable by the"
                   " daemon's user?")


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A reader's own connection (web pages, exports): it cannot write, and under WAL it
    neither blocks the daemon's writer nor waits for it."""
    db = sqlite3.connect(
        f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
    )
    db.row_factory = sqlite3.Row
    return db


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()["user_version"]
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"schema version {version} is newer than this camtrap ({SCHEMA_VERSION})"
        )
    for v in range(version + 1, SCHEMA_VERSION + 1):
        # executescript commits on its own: the script is the transaction
        db.executescript(f"BEGIN IMMEDIATE; {_MIGRATIONS[v]}; PRAGMA user_version = {v}; COMMIT;")
        log.info("migrated %s to schema %d", path, v)


@contextmanager
def transaction(db: sqlite3.Connection, lock: threading.Lock) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken with the write lock at its start (BEGIN IMMEDIATE), so
    it never fails half-way for want of it."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
