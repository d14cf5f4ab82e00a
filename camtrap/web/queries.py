"""Every read the web interface makes, on read-only SQLite connections of its own.

The pages (pages.py) and the JSON API (api.py) call these; neither writes SQL. Reads never
take the Store's lock and never write, so a client hammering a page cannot slow the
pipeline's single writer (WAL: readers and the writer do not wait for each other).

Species everywhere here is the *effective* species: the reviewed one when a review set it,
else the model's (`COALESCE(reviewed_species, species)`). Deleted visits are left out of
every list unless a filter asks for them (`status="deleted"`); rejected ("not a bird")
visits are listed only under their status and never counted as birds.

Paging is keyset on (start_ts, visit_id), newest first: a cursor is an opaque string
(`Cursor.encode()`), never an OFFSET, so page 2 000 costs what page 1 does.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import date, tzinfo
from pathlib import Path
from typing import Any, TypeVar

from camtrap.storage.db import DB_FILE, connect_readonly
from camtrap.storage.store import COUNTED, EFFECTIVE_SPECIES
from camtrap.timeutil import day_bounds
from camtrap.web import stats
from camtrap.web.records import (  # the names pages.py and api.py import from here
    DEFAULT_LIMIT,
    MAX_LIMIT,
    STATUS_FILTERS,
    STATUSES,
    VISIT_COLUMNS,
    CameraHours,
    Cursor,
    DayGrid,
    NeedsReview,
    Neighbours,
    Review,
    ReviewEntry,
    Similar,
    SpeciesCount,
    SpeciesRow,
    SpeciesStats,
    Visit,
    VisitFilter,
    VisitPage,
    visit_from_row,
)

__all__ = [
    "DEFAULT_LIMIT", "MAX_LIMIT", "STATUSES", "STATUS_FILTERS", "CameraHours", "Cursor",
    "DayGrid", "NeedsReview", "Neighbours", "Reader", "Review", "ReviewEntry", "Similar",
    "SpeciesCount", "SpeciesRow", "SpeciesStats", "Visit", "VisitFilter", "VisitPage",
]

T = TypeVar("T")

class Reader:
    """The web interface's reads. One read-only connection per thread (Starlette runs
    plain `def` endpoints in a thread pool), opened lazily. `tz` is `schedule.timezone`:
    days and hours are local to it. `low_score` bounds the needs-review "low score" group."""

    def __init__(
        self,
        state_dir: Path,
        tz: tzinfo,
        *,
        low_score: float = 0.5,
        unknown_label: str | None = "Unknown bird",
    ) -> None:
        self.state_dir = Path(state_dir)
        self.tz = tz
        self.low_score = low_score
        self.unknown_label = unknown_label
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._embeddings = stats.EmbeddingCache()
        self._cache: dict[str, tuple[tuple[Any, ...], Any]] = {}
        self._cache_lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = connect_readonly(self.state_dir / DB_FILE)
            self._local.db = db
            with self._all_lock:
                self._all.append(db)
        return db

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self._db().execute(sql, args).fetchall()

    def _one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        return self._db().execute(sql, args).fetchone()

    def close(self) -> None:
        """Close every thread's connection (at server stop)."""
        with self._all_lock:
            conns, self._all = self._all, []
        for db in conns:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        self._local = threading.local()

    # --- visits ---------------------------------------------------------------------------

    def _where(self, f: VisitFilter) -> tuple[list[str], list[Any]]:
        """SQL conditions for a filter. Raises ValueError for a filter that cannot be."""
        conds: list[str] = []
        args: list[Any] = []
        status = f.status or None
        if status is None:
            conds.append(COUNTED)
        elif status == "all":
            pass
        elif status == "deleted":
            conds.append("deleted_ts IS NOT NULL")
        elif status == "kept":
            conds.append("keep = 1")
        elif status == "reviewed":
            conds.append("status != 'unreviewed' AND deleted_ts IS NULL")
        elif status in STATUSES:
            conds.append("status = ? AND deleted_ts IS NULL")
            args.append(status)
        else:
            raise ValueError(f"status: one of {', '.join(STATUS_FILTERS)}, not {status!r}")
        if f.camera:
            conds.append("camera = ?")
            args.append(f.camera)
        if f.species:
            conds.append(f"{EFFECTIVE_SPECIES} = ?")
            args.append(f.species)
        if f.date_from is not None:
            conds.append("start_ts >= ?")
            args.append(day_bounds(f.date_from, self.tz)[0])
        if f.date_to is not None:
            conds.append("start_ts < ?")
            args.append(day_bounds(f.date_to, self.tz)[1])
        if f.min_score is not None:
            conds.append("best_score >= ?")
            args.append(f.min_score)
        if f.max_score is not None:
            conds.append("best_score <= ?")
            args.append(f.max_score)
        if f.unknown is True:
            conds.append("unknown = 1 AND reviewed_species IS NULL")
        elif f.unknown is False:
            conds.append("(unknown = 0 OR reviewed_species IS NOT NULL)")
        if f.visit_ids is not None:
            ids = list(f.visit_ids)[:MAX_LIMIT]
            conds.append(f"visit_id IN ({','.join('?' * len(ids))})" if ids else "0")
            args.extend(ids)
        return conds, args

    def visits(
        self, f: VisitFilter, limit: int = DEFAULT_LIMIT, before: str | None = None
    ) -> VisitPage:
        """One page of visits, newest first, after cursor `before` (None: the first page).
        Raises ValueError for a bad cursor or filter."""
        limit = max(1, min(int(limit), MAX_LIMIT))
        conds, args = self._where(f)
        if before:
            c = Cursor.decode(before)
            # `<=` first: a plain index range (an OR of both makes SQLite sort everything)
            conds.append("start_ts <= ? AND (start_ts < ? OR visit_id < ?)")
            args += [c.start_ts, c.start_ts, c.visit_id]
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        rows = self._rows(
            f"SELECT {VISIT_COLUMNS} FROM visits {where}"
            " ORDER BY start_ts DESC, visit_id DESC LIMIT ?",
            [*args, limit + 1],
        )
        visits = [visit_from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        nxt = Cursor(visits[-1].start_ts, visits[-1].visit_id).encode() if more else None
        return VisitPage(visits, nxt)

    def count(self, f: VisitFilter) -> int:
        """How many visits the filter matches (the bulk "all matching" confirmation)."""
        conds, args = self._where(f)
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        row = self._one(f"SELECT COUNT(*) AS n FROM visits {where}", args)
        return int(row["n"]) if row else 0

    def visit_ids(self, f: VisitFilter, limit: int = MAX_LIMIT) -> list[str]:
        """The ids the filter matches, newest first, at most `limit` (bulk review)."""
        conds, args = self._where(f)
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        rows = self._rows(
            f"SELECT visit_id FROM visits {where} ORDER BY start_ts DESC, visit_id DESC"
            " LIMIT ?",
            [*args, max(0, int(limit))],
        )
        return [r["visit_id"] for r in rows]

    def visit(self, visit_id: str) -> Visit | None:
        """One visit, deleted or not; None when there is no such visit."""
        row = self._one(f"SELECT {VISIT_COLUMNS} FROM visits WHERE visit_id = ?", (visit_id,))
        return None if row is None else visit_from_row(row)

    def history(self, visit_id: str) -> list[ReviewEntry]:
        """A visit's reviews, oldest first."""
        rows = self._rows(
            "SELECT id, visit_id, ts, user, action, old_species, new_species, note"
            " FROM reviews WHERE visit_id = ? ORDER BY id",
            (visit_id,),
        )
        return [
            ReviewEntry(r["id"], r["visit_id"], r["ts"], r["user"], r["action"],
                        r["old_species"], r["new_species"], r["note"])
            for r in rows
        ]

    def neighbours(self, visit_id: str, f: VisitFilter | None = None) -> Neighbours:
        """The visits on either side of `visit_id` in the list `f` gives (default: every
        visit not deleted; a deleted visit's neighbours are its fellow deleted ones)."""
        v = self.visit(visit_id)
        if v is None:
            return Neighbours(None, None)
        if f is None:
            f = VisitFilter(status="deleted" if v.deleted else None)
        conds, args = self._where(f)
        base = " AND ".join(conds) if conds else "1"
        newer = self._one(
            f"SELECT visit_id FROM visits WHERE {base}"
            " AND start_ts >= ? AND (start_ts > ? OR visit_id > ?)"
            " ORDER BY start_ts, visit_id LIMIT 1",
            [*args, v.start_ts, v.start_ts, v.visit_id],
        )
        older = self._one(
            f"SELECT visit_id FROM visits WHERE {base}"
            " AND start_ts <= ? AND (start_ts < ? OR visit_id < ?)"
            " ORDER BY start_ts DESC, visit_id DESC LIMIT 1",
            [*args, v.start_ts, v.start_ts, v.visit_id],
        )
        return Neighbours(newer["visit_id"] if newer else None,
                          older["visit_id"] if older else None)

    def _change_key(self) -> tuple[Any, ...]:
        """Changes when a visit is added or a review made (both instant to read): what the
        cached lists below are valid for."""
        a = self._one("SELECT MAX(rowid) AS n FROM visits")
        b = self._one("SELECT MAX(id) AS n FROM reviews")
        return (a["n"] if a else None, b["n"] if b else None)

    def _cached(self, name: str, make: Callable[[], T]) -> T:
        key = self._change_key()
        with self._cache_lock:
            hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]  # type: ignore[no-any-return]
        value = make()
        with self._cache_lock:
            self._cache[name] = (key, value)
        return value

    def species_list(self) -> list[SpeciesCount]:
        """Every effective species with stored visits (not deleted, not rejected), most seen
        first: the filter drop-down and the correction search. Cached until a visit or a
        review is added."""

        def make() -> list[SpeciesCount]:
            rows = self._rows(
                f"SELECT {EFFECTIVE_SPECIES} AS species, COUNT(*) AS n"
                f" FROM {stats.COUNTED_INDEX} WHERE {COUNTED} GROUP BY 1 ORDER BY n DESC, species"
            )
            return [SpeciesCount(r["species"], r["n"], r["species"] == self.unknown_label)
                    for r in rows]

        return list(self._cached("species_list", make))

    def cameras(self) -> list[str]:
        """Cameras that have visits or uptime records."""

        def make() -> list[str]:
            rows = self._rows(
                "SELECT camera FROM (SELECT DISTINCT camera FROM visits)"
                " UNION SELECT DISTINCT camera FROM camera_uptime ORDER BY camera"
            )
            return [r["camera"] for r in rows]

        return list(self._cached("cameras", make))

    # --- day, species, review queue, similar (stats.py) -------------------------------------

    def last_seen_before(self, species: str, before_ts: float) -> float | None:
        """As `Store.last_seen_before`, on this reader's connection."""
        return stats.last_seen_before(self, species, before_ts)

    def next_day_with(self, species: str, after_ts: float) -> date | None:
        """The local day of the first visit of `species` (effective) from `after_ts` on."""
        return stats.next_day_with(self, species, after_ts)

    def day(self, day: date, cameras: Sequence[str] = ()) -> DayGrid:
        """The day page: species x hour counts with each species' best crop, camera hours
        (down and paused), summary files and the neighbouring days with visits. `cameras`:
        configured cameras, listed even on a day without records."""
        return stats.day_grid(self, day, cameras)

    def species(self, name: str, days: int = 30, best: int = 12) -> SpeciesStats:
        """The species page for `name` (effective species)."""
        return stats.species_stats(self, name, days, best)

    def needs_review(self, limit: int = 24) -> NeedsReview:
        """Unreviewed, not deleted visits worth a look, at most `limit` per group."""
        return stats.needs_review(self, limit)

    def similar(self, visit_id: str, limit: int = 24, min_similarity: float = 0.0) -> list[Similar]:
        """Visits whose stored embeddings are nearest to this visit's by cosine, best first
        (not deleted; the visit itself left out). Empty when it has no embedding."""
        return stats.similar(self, visit_id, limit, min_similarity)
