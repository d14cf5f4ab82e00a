"""The web interface's statistics: the day grid, a species page, the review queue and
similar visits, read through a `Source` (the Reader of queries.py, with its read-only
connection per thread). Pure SQL and numpy over the stored rows; nothing here writes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import date, timedelta, tzinfo
from typing import TYPE_CHECKING

import numpy as np

from camtrap.storage.store import COUNTED, EFFECTIVE_SPECIES
from camtrap.timeutil import day_bounds, local, local_day
from camtrap.web.records import (
    VISIT_COLUMNS,
    CameraHours,
    DayGrid,
    NeedsReview,
    Similar,
    Source,
    SpeciesRow,
    SpeciesStats,
    Visit,
    visit_from_row,
)

if TYPE_CHECKING:
    from camtrap.storage.store import VisitRow

# The latest verdict (confirm, correct, reject, reset) of every reviewed visit.
_LATEST_VERDICTS = (
    "SELECT MAX(id) AS id FROM reviews"
    " WHERE action IN ('confirm', 'correct', 'reject', 'reset') GROUP BY visit_id"
)

# Aggregates over the visits that count by effective species read this covering partial
# index (schema 5); SQLite does not take an expression index as covering by itself.
COUNTED_INDEX = "visits INDEXED BY visits_counted_species"


def _visit_rows(src: Source, start: float, end: float) -> list[VisitRow]:
    """The visits that count, as the summaries see them (effective species)."""
    from camtrap.storage.store import VisitRow

    rows = src._rows(
        f"SELECT visit_id, camera, {EFFECTIVE_SPECIES} AS species,"
        " CASE WHEN reviewed_species IS NULL THEN unknown ELSE 0 END AS unknown,"
        " start_ts, last_ts, end_ts, best_score, hits, crop_file FROM visits"
        f" WHERE start_ts >= ? AND start_ts < ? AND {COUNTED} ORDER BY start_ts",
        (start, end),
    )
    return [
        VisitRow(r["visit_id"], r["camera"], r["species"], bool(r["unknown"]),
                 r["start_ts"], r["last_ts"], r["end_ts"], r["best_score"], r["hits"], [],
                 r["crop_file"])
        for r in rows
    ]


def last_seen_before(src: Source, species: str, before_ts: float) -> float | None:
    """As `Store.last_seen_before`, on this reader's connection."""
    a = src._one(
        f"SELECT MAX(start_ts) AS t FROM visits WHERE {EFFECTIVE_SPECIES} = ?"
        f" AND start_ts < ? AND {COUNTED} AND (unknown = 0 OR reviewed_species IS NOT NULL)",
        (species, before_ts),
    )
    b = src._one(
        "SELECT MAX(first_ts) AS t FROM daily_rollups"
        " WHERE species = ? AND first_ts < ? AND unknown = 0",
        (species, before_ts),
    )
    seen = [r["t"] for r in (a, b) if r is not None and r["t"] is not None]
    return max(seen) if seen else None


def next_day_with(src: Source, species: str, after_ts: float) -> date | None:
    """The local day of the first visit of `species` (effective) from `after_ts` on."""
    row = src._one(
        f"SELECT MIN(start_ts) AS t FROM visits WHERE {EFFECTIVE_SPECIES} = ?"
        f" AND start_ts >= ? AND {COUNTED}",
        (species, after_ts),
    )
    return local_day(row["t"], src.tz) if row and row["t"] is not None else None


def day_grid(src: Source, day: date, cameras: Sequence[str] = ()) -> DayGrid:
    """The day page: species x hour counts with each species' best crop, camera hours
    (down and paused), summary files and the neighbouring days with visits. `cameras`:
    configured cameras, listed even on a day without records."""
    from camtrap.reports.build import build_summary
    from camtrap.storage.store import Uptime

    start, end = day_bounds(day, src.tz)
    rows = _visit_rows(src, start, end)
    uptime = {
        r["camera"]: Uptime(r["seconds_up"], r["seconds_total"], r["seconds_paused"])
        for r in src._rows(
            "SELECT camera, seconds_up, seconds_total, seconds_paused FROM camera_uptime"
            " WHERE day = ?",
            (day.isoformat(),),
        )
    }
    s = build_summary(day, src.tz, rows, cameras, uptime,
                      lambda sp: last_seen_before(src, sp, start))
    by_id = {v.visit_id: v for v in rows}
    species = [
        SpeciesRow(
            species=x.species,
            unknown=x.unknown,
            visits=x.visits,
            hourly=x.hourly,
            first_ts=min(v.start_ts for v in rows if v.species == x.species),
            last_ts=max(v.last_ts for v in rows if v.species == x.species),
            best_score=x.best_score,
            best_visit_id=x.best_visit_id,
            best_crop=by_id[x.best_visit_id].crop_file,
            new_ever=x.new_ever,
            first_this_year=x.first_this_year,
        )
        for x in s.species
    ]
    hours = _camera_hours(src, day, start, end)
    cams = [
        CameraHours(
            camera=c.camera,
            hours=hours.get(c.camera, ("unknown",) * 24),
            uptime=c.uptime,
            seconds_up=c.seconds_up,
            seconds_watched=c.seconds_watched,
            seconds_paused=c.seconds_paused,
        )
        for c in s.cameras
    ]
    summaries = src.state_dir / "summaries"
    js, img = summaries / f"{day.isoformat()}.json", summaries / f"{day.isoformat()}.jpg"
    prev = src._one(
        f"SELECT MAX(start_ts) AS t FROM visits WHERE start_ts < ? AND {COUNTED}", (start,)
    )
    nxt = src._one(
        f"SELECT MIN(start_ts) AS t FROM visits WHERE start_ts >= ? AND {COUNTED}", (end,)
    )
    return DayGrid(
        day=day,
        visits=s.visits,
        species_count=s.species_count,
        hourly=s.hourly,
        species=species,
        cameras=cams,
        summary_json=str(js.relative_to(src.state_dir)) if js.exists() else None,
        summary_image=str(img.relative_to(src.state_dir)) if img.exists() else None,
        previous_day=local_day(prev["t"], src.tz) if prev and prev["t"] else None,
        next_day=local_day(nxt["t"], src.tz) if nxt and nxt["t"] else None,
    )


def _camera_hours(src: Source, day: date, start: float, end: float) -> dict[str, tuple[str, ...]]:
    """Each camera's 24 local hours from `camera_uptime_hours`."""
    out: dict[str, list[str]] = {}
    for r in src._rows(
        "SELECT camera, hour, seconds_up, seconds_total, seconds_paused"
        " FROM camera_uptime_hours WHERE day = ?",
        (day.isoformat(),),
    ):
        hours = out.setdefault(r["camera"], ["unknown"] * 24)
        if 0 <= r["hour"] < 24:
            hours[r["hour"]] = hour_state(r["seconds_up"], r["seconds_total"],
                                          r["seconds_paused"])
    return {c: tuple(h) for c, h in out.items()}


def species_stats(src: Source, name: str, days: int = 30, best: int = 12) -> SpeciesStats:
    """The species page for `name` (effective species). The counts read only the
    covering index of counted visits (schema 5), so a species with 20 000 visits costs
    no table rows but its best few."""
    eff = f"{EFFECTIVE_SPECIES} = ? AND {COUNTED}"
    named = "(unknown = 0 OR reviewed_species IS NOT NULL)"
    v = src._one(
        f"SELECT MIN(start_ts) AS first, COUNT(*) AS n FROM {COUNTED_INDEX} WHERE {eff}",
        (name,),
    )
    latest = src._rows(
        f"SELECT last_ts FROM visits WHERE {eff} ORDER BY start_ts DESC LIMIT 8", (name,)
    )
    r = src._one(
        "SELECT MIN(first_ts) AS first, MAX(last_ts) AS last FROM daily_rollups"
        " WHERE species = ?",
        (name,),
    )
    firsts = [x for x in (v and v["first"], r and r["first"]) if x is not None]
    lasts = [x for x in ([max(x["last_ts"] for x in latest)] if latest else [])
             + ([r["last"]] if r and r["last"] is not None else [])]
    now = time.time()
    year_start = day_bounds(date(local_day(now, src.tz).year, 1, 1), src.tz)[0]
    fy_v = src._one(
        f"SELECT MIN(start_ts) AS t FROM visits WHERE {eff} AND {named} AND start_ts >= ?",
        (name, year_start),
    )
    fy_r = src._one(
        "SELECT MIN(first_ts) AS t FROM daily_rollups WHERE species = ? AND first_ts >= ?",
        (name, year_start),
    )
    fy = [x["t"] for x in (fy_v, fy_r) if x is not None and x["t"] is not None]
    today = local_day(now, src.tz)
    since_day = today - timedelta(days=max(1, days) - 1)
    since = day_bounds(since_day, src.tz)[0]
    recent = [x["start_ts"] for x in src._rows(
        f"SELECT start_ts FROM {COUNTED_INDEX} WHERE {eff} AND start_ts >= ?", (name, since))]
    by_day_counts: dict[date, int] = {}
    for d in local_days(recent, src.tz):
        by_day_counts[d] = by_day_counts.get(d, 0) + 1
    by_day = [
        (since_day + timedelta(days=i), by_day_counts.get(since_day + timedelta(days=i), 0))
        for i in range((today - since_day).days + 1)
    ]
    starts = [x["start_ts"] for x in src._rows(
        f"SELECT start_ts FROM {COUNTED_INDEX} WHERE {eff}", (name,))]
    by_hour = local_hour_counts(starts, src.tz)
    by_camera = {
        row["camera"]: row["n"]
        for row in src._rows(
            f"SELECT camera, COUNT(*) AS n FROM {COUNTED_INDEX} WHERE {eff}"
            " GROUP BY camera ORDER BY n DESC, camera",
            (name,),
        )
    }
    top_ids = [x["visit_id"] for x in src._rows(
        f"SELECT visit_id FROM {COUNTED_INDEX} WHERE {eff} ORDER BY best_score DESC, start_ts"
        " LIMIT ?",
        (name, best * 4),
    )]
    best_rows = src._rows(
        f"SELECT {VISIT_COLUMNS} FROM visits WHERE crop_file IS NOT NULL AND visit_id IN"
        f" ({','.join('?' * len(top_ids))}) ORDER BY best_score DESC, start_ts LIMIT ?",
        (*top_ids, best),
    ) if top_ids else []
    verdicts = src._rows(
        f"SELECT r.action, r.new_species, r.model_species FROM reviews r JOIN"
        f" ({_LATEST_VERDICTS}) l ON r.id = l.id"
        " WHERE r.model_species = ? OR (r.action = 'correct' AND r.new_species = ?)",
        (name, name),
    )
    confirmed = corrected_away = rejected = 0
    to: dict[str, int] = {}
    frm: dict[str, int] = {}
    for row in verdicts:
        action, new, model = row["action"], row["new_species"], row["model_species"]
        if model == name:
            if action == "confirm" or (action == "correct" and new == name):
                confirmed += 1
            elif action == "correct":
                corrected_away += 1
                to[new] = to.get(new, 0) + 1
            elif action == "reject":
                rejected += 1
        elif action == "correct" and new == name:
            frm[model] = frm.get(model, 0) + 1
    return SpeciesStats(
        species=name,
        first_ever_ts=min(firsts) if firsts else None,
        first_this_year_ts=min(fy) if fy else None,
        last_seen_ts=max(lasts) if lasts else None,
        visits=int(v["n"]) if v else 0,
        by_day=by_day,
        by_hour=by_hour,
        by_camera=by_camera,
        best=[visit_from_row(x) for x in best_rows],
        confirmed=confirmed,
        corrected_away=corrected_away,
        corrected_to=dict(sorted(to.items(), key=lambda kv: (-kv[1], kv[0]))),
        corrected_from=dict(sorted(frm.items(), key=lambda kv: (-kv[1], kv[0]))),
        rejected=rejected,
    )


def needs_review(src: Source, limit: int = 24) -> NeedsReview:
    """Unreviewed, not deleted visits worth a look, at most `limit` per group."""
    open_ = "status = 'unreviewed' AND deleted_ts IS NULL"
    unknown = src._rows(
        f"SELECT {VISIT_COLUMNS} FROM visits WHERE {open_} AND unknown = 1"
        " ORDER BY start_ts DESC, visit_id DESC LIMIT ?",
        (limit,),
    )
    low = src._rows(
        f"SELECT {VISIT_COLUMNS} FROM visits WHERE {open_} AND unknown = 0 AND best_score < ?"
        " ORDER BY start_ts DESC, visit_id DESC LIMIT ?",
        (src.low_score, limit),
    )
    firsts = first_sightings(src)
    year_start = day_bounds(date(local_day(time.time(), src.tz).year, 1, 1), src.tz)[0]
    ever: list[Visit] = []
    this_year: list[Visit] = []
    for v, earlier in firsts:
        if v.status != "unreviewed":
            continue
        if earlier is None:
            ever.append(v)
        elif earlier < year_start <= v.start_ts:
            this_year.append(v)
    ever.sort(key=lambda v: (-v.start_ts, v.visit_id))
    this_year.sort(key=lambda v: (-v.start_ts, v.visit_id))
    # the status index alone, less the few deleted ones (a partial index): no table rows
    total = src._one(
        "SELECT (SELECT COUNT(*) FROM visits WHERE status = 'unreviewed')"
        " - (SELECT COUNT(*) FROM visits WHERE deleted_ts IS NOT NULL"
        " AND status = 'unreviewed') AS n"
    )
    return NeedsReview(
        unknown=[visit_from_row(r) for r in unknown],
        low_score=[visit_from_row(r) for r in low],
        first_ever=ever[:limit],
        first_this_year=this_year[:limit],
        total_unreviewed=int(total["n"]) if total else 0,
    )


def first_sightings(src: Source) -> list[tuple[Visit, float | None]]:
    """Each named species' first stored visit that counts, with the species' latest
    sighting before it (visits are all later, so only rollups of deleted visits can be
    earlier): None means first ever. One indexed row per species; cached until a visit
    or a review is added."""

    def make() -> list[tuple[Visit, float | None]]:
        out: list[tuple[Visit, float | None]] = []
        for sp in src.species_list():
            if sp.unknown:
                continue
            first = src._one(
                f"SELECT {VISIT_COLUMNS} FROM visits WHERE {EFFECTIVE_SPECIES} = ?"
                f" AND {COUNTED} ORDER BY start_ts, visit_id LIMIT 1",
                (sp.species,),
            )
            if first is None:
                continue
            v = visit_from_row(first)
            if v.unknown:
                continue
            earlier = src._one(
                "SELECT MAX(first_ts) AS t FROM daily_rollups"
                " WHERE species = ? AND first_ts < ? AND unknown = 0",
                (sp.species, v.start_ts),
            )
            out.append((v, earlier["t"] if earlier else None))
        return out

    return list(src._cached("first_sightings", make))


def similar(
    src: Source, visit_id: str, limit: int = 24, min_similarity: float = 0.0
) -> list[Similar]:
    """Visits whose stored embeddings are nearest to this visit's by cosine, best first
    (not deleted; the visit itself left out). Empty when it has no embedding."""
    matrix, ids, index = src._embeddings.get(src._db())
    i = index.get(visit_id)
    if i is None:
        return []
    sims = matrix @ matrix[i]
    sims[i] = -np.inf
    k = min(len(ids), max(limit * 4, limit + 8))
    top = np.argpartition(-sims, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
    top = top[np.argsort(-sims[top], kind="stable")]
    chosen = [(ids[j], float(sims[j])) for j in top
              if np.isfinite(sims[j]) and sims[j] >= min_similarity]
    if not chosen:
        return []
    by_id = {
        r["visit_id"]: visit_from_row(r)
        for r in src._rows(
            f"SELECT {VISIT_COLUMNS} FROM visits WHERE deleted_ts IS NULL AND visit_id IN"
            f" ({','.join('?' * len(chosen))})",
            [vid for vid, _ in chosen],
        )
    }
    return [Similar(by_id[vid], sim) for vid, sim in chosen if vid in by_id][:limit]


def local_days(stamps: Sequence[float], tz: tzinfo) -> list[date]:
    """The local dates of many Unix times, converting each distinct UTC hour once."""
    cache: dict[int, date] = {}
    out = []
    for ts in stamps:
        h = int(ts // 3600)
        d = cache.get(h)
        if d is None:
            d = cache[h] = local_day(h * 3600, tz)
        out.append(d)
    return out


def local_hour_counts(stamps: Sequence[float], tz: tzinfo) -> tuple[int, ...]:
    """24 counts of Unix times by local hour; each distinct UTC hour is converted once
    (zone offsets change on hour boundaries, and where they are half an hour off the
    minute is kept)."""
    counts = [0] * 24
    if not stamps:
        return tuple(counts)
    arr = np.asarray(stamps, dtype=np.float64)
    buckets, inverse = np.unique((arr // 3600).astype(np.int64), return_inverse=True)
    offsets = np.array([local(float(b) * 3600, tz).utcoffset().total_seconds()  # type: ignore[union-attr]
                        for b in buckets])
    hours = (((arr + offsets[inverse]) // 3600) % 24).astype(np.int64)
    for h, n in zip(*np.unique(hours, return_counts=True), strict=True):
        counts[int(h)] = int(n)
    return tuple(counts)


def hour_state(up: float, total: float, paused: float) -> str:
    """One camera-hour: "paused" (mostly outside active hours), "up" (watched and connected
    at least 90 % of the watched time), "down" (at most 10 %), "mixed" between, "unknown"
    when nothing was recorded (the daemon was not running)."""
    if total <= 0 and paused <= 0:
        return "unknown"
    if paused >= total:
        return "paused"
    share = up / total
    if share >= 0.9:
        return "up"
    if share <= 0.1:
        return "down"
    return "mixed"


class EmbeddingCache:
    """Every stored embedding as one L2-normalised float32 matrix (100 000 x 384 floats
    is 150 MB, read once), then a matrix-vector product per query. New visits are appended
    (rows past the highest rowid seen); the whole matrix is read again every RELOAD_S, for
    the embeddings that improve while a visit is open. Deleted visits stay in it: the
    query leaves them out when it reads their rows."""

    RELOAD_S = 600.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rowid = 0
        self._loaded_at = 0.0
        self._dim: int | None = None
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._ids: list[str] = []
        self._index: dict[str, int] = {}

    def get(self, db: sqlite3.Connection) -> tuple[np.ndarray, list[str], dict[str, int]]:
        with self._lock:
            if time.monotonic() - self._loaded_at > self.RELOAD_S:
                self._rowid, self._dim = 0, None
                self._matrix, self._ids, self._index = np.zeros((0, 0), np.float32), [], {}
                self._loaded_at = time.monotonic()
            top = db.execute("SELECT MAX(rowid) AS n FROM visits").fetchone()["n"] or 0
            if top > self._rowid:
                ids: list[str] = []
                vecs: list[np.ndarray] = []
                for r in db.execute(
                    "SELECT visit_id, embedding FROM visits WHERE rowid > ? AND rowid <= ?"
                    " AND embedding IS NOT NULL",
                    (self._rowid, top),
                ):
                    vec = np.frombuffer(r["embedding"], dtype="<f4")
                    if self._dim is None:
                        self._dim = vec.size
                    if vec.size != self._dim or r["visit_id"] in self._index:
                        continue
                    ids.append(r["visit_id"])
                    vecs.append(vec)
                if vecs:
                    m = np.vstack(vecs).astype(np.float32)
                    norms = np.linalg.norm(m, axis=1, keepdims=True)
                    m /= np.where(norms > 0, norms, 1.0)
                    self._matrix = np.vstack([self._matrix, m]) if self._matrix.size else m
                    for vid in ids:
                        self._index[vid] = len(self._ids)
                        self._ids.append(vid)
                self._rowid = top
            return self._matrix, self._ids, self._index
