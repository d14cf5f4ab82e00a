"""The SQL side of reviews (schema 4), inside the Store's write transaction: a review
updates the visit row, adds a `reviews` row, queues its outbox messages and rolls the day's
`daily_rollups` up again, all at once. The rules themselves are camtrap/visits/reviews.py.

A visit counts as a bird (rollups, summaries, the digest, `visits_today`) unless deleted or
rejected, under its effective species; a correction takes it out of the unknown tier.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date, tzinfo

from camtrap.timeutil import day_bounds, local_day
from camtrap.visits import reviews
from camtrap.visits.reviews import ReviewedVisit, ReviewOutcome

COUNTED = "deleted_ts IS NULL AND status != 'rejected'"
EFFECTIVE_SPECIES = "COALESCE(reviewed_species, species)"  # spelt as its indexes are
EFFECTIVE_UNKNOWN = "CASE WHEN reviewed_species IS NULL THEN unknown ELSE 0 END"
REVIEWED_COLUMNS = (
    "visit_id, camera, species, unknown, start_ts, last_ts, end_ts, best_score, hits, top_k,"
    " box, crop_file, status, reviewed_species, keep, deleted_ts, review_ts, review_user"
)
_ROLLUP_COLUMNS = "day, camera, species, unknown, visits, hits, best_score, first_ts, last_ts"

# The outbox messages of one applied review: (topic, payload, qos, retain).
ReviewMessages = Callable[[ReviewOutcome], list[tuple[str, bytes, int, bool]]]


def reviewed_visit(r: sqlite3.Row) -> ReviewedVisit:
    """A `visits` row read with REVIEWED_COLUMNS."""
    box = json.loads(r["box"]) if r["box"] else None
    return ReviewedVisit(
        visit_id=r["visit_id"],
        camera=r["camera"],
        model_species=r["species"],
        model_unknown=bool(r["unknown"]),
        score=r["best_score"],
        top_k=tuple((str(s), float(p)) for s, p in json.loads(r["top_k"])),
        hits=r["hits"],
        start_ts=r["start_ts"],
        last_ts=r["last_ts"],
        end_ts=r["end_ts"],
        box=tuple(box) if box else None,  # type: ignore[arg-type]
        crop_file=r["crop_file"],
        state=reviews.ReviewState(
            status=r["status"],
            reviewed_species=r["reviewed_species"],
            keep=bool(r["keep"]),
            deleted_ts=r["deleted_ts"],
        ),
        review_ts=r["review_ts"],
        review_user=r["review_user"],
    )


def apply_reviews(
    db: sqlite3.Connection,
    tz: tzinfo,
    visit_ids: Sequence[str],
    action: str,
    species: str | None,
    user: str | None,
    note: str | None,
    now: float,
    created: float,
    messages: ReviewMessages | None,
) -> tuple[list[ReviewOutcome], dict[str, Exception]]:
    """Apply one review to each visit, in the caller's transaction. A visit the rules
    refuse (ReviewError) or that does not exist (KeyError) is left as it is and reported."""
    done: list[ReviewOutcome] = []
    failed: dict[str, Exception] = {}
    for vid in dict.fromkeys(visit_ids):
        row = db.execute(
            f"SELECT {REVIEWED_COLUMNS} FROM visits WHERE visit_id = ?", (vid,)
        ).fetchone()
        if row is None:
            failed[vid] = KeyError(vid)
            continue
        before = reviewed_visit(row)
        try:
            state = reviews.apply(before.state, before.model_species, action, species, now)
        except reviews.ReviewError as exc:
            failed[vid] = exc
            continue
        after = replace(before, state=state, review_ts=now, review_user=user)
        db.execute(
            "UPDATE visits SET status = ?, reviewed_species = ?, keep = ?, deleted_ts = ?,"
            " review_ts = ?, review_user = ? WHERE visit_id = ?",
            (state.status, state.reviewed_species, int(state.keep), state.deleted_ts, now, user,
             vid),
        )
        rid = db.execute(
            "INSERT INTO reviews (visit_id, ts, user, action, old_species, new_species, note,"
            " model_species) VALUES (?,?,?,?,?,?,?,?)",
            (vid, now, user, action, before.species, after.species, note, before.model_species),
        ).lastrowid
        outcome = ReviewOutcome(action, int(rid or 0), before, after, note)  # type: ignore[arg-type]
        done.append(outcome)
        if messages is not None:
            db.executemany(
                "INSERT INTO outbox (topic, payload, qos, retain, created) VALUES (?,?,?,?,?)",
                [(t, p, q, int(r), created) for t, p, q, r in messages(outcome)],
            )
    refresh_rollups(db, tz, done)
    return done, failed


def refresh_rollups(db: sqlite3.Connection, tz: tzinfo, done: list[ReviewOutcome]) -> None:
    """The rollups of the days whose counts the reviews changed. A day is rolled up whole
    again from its visits (as reports.build.rollup_rows does), unless retention has deleted
    some of them (its rollups count more visits than are stored): then the reviewed visits
    are moved between its rows one by one."""
    by_day: dict[str, list[ReviewOutcome]] = {}
    for o in done:
        if o.counting_changed:
            by_day.setdefault(local_day(o.after.start_ts, tz).isoformat(), []).append(o)
    for day, outcomes in by_day.items():
        start, end = day_bounds(date.fromisoformat(day), tz)
        rolled = db.execute(
            "SELECT COALESCE(SUM(visits), 0) AS n FROM daily_rollups WHERE day = ?", (day,)
        ).fetchone()["n"]
        live = db.execute(
            f"SELECT COUNT(*) AS n FROM visits WHERE start_ts >= ? AND start_ts < ? AND {COUNTED}",
            (start, end),
        ).fetchone()["n"]
        # `live` is after the reviews: add back what they took away, less what they added
        live += sum(o.before.state.counts for o in outcomes) - sum(
            o.after.state.counts for o in outcomes)
        if rolled > live:
            for o in outcomes:
                adjust_rollups(db, day, o.before, o.after)
            continue
        db.execute("DELETE FROM daily_rollups WHERE day = ?", (day,))
        db.execute(
            f"""INSERT INTO daily_rollups ({_ROLLUP_COLUMNS})
            SELECT ?, camera, {EFFECTIVE_SPECIES}, MIN({EFFECTIVE_UNKNOWN}), COUNT(*),
              SUM(hits), MAX(best_score), MIN(start_ts), MAX(last_ts)
            FROM visits WHERE start_ts >= ? AND start_ts < ? AND {COUNTED}
            GROUP BY camera, 3""",
            (day, start, end),
        )


def adjust_rollups(
    db: sqlite3.Connection, day: str, before: ReviewedVisit, after: ReviewedVisit
) -> None:
    """Move one visit between the rollups of a day whose other visits retention has
    deleted (so it cannot be rolled up whole again): counts exactly, times and best score
    as well as they can be without the deleted visits."""
    if before.state.counts:
        db.execute(
            "UPDATE daily_rollups SET visits = visits - 1, hits = MAX(0, hits - ?)"
            " WHERE day = ? AND camera = ? AND species = ?",
            (before.hits, day, before.camera, before.species),
        )
        db.execute("DELETE FROM daily_rollups WHERE day = ? AND visits <= 0", (day,))
    if after.state.counts:
        db.execute(
            f"""INSERT INTO daily_rollups ({_ROLLUP_COLUMNS})
            VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)
            ON CONFLICT (day, camera, species) DO UPDATE SET
              visits = visits + 1, hits = hits + excluded.hits,
              unknown = MIN(unknown, excluded.unknown),
              best_score = MAX(best_score, excluded.best_score),
              first_ts = MIN(first_ts, excluded.first_ts),
              last_ts = MAX(last_ts, excluded.last_ts)""",
            (day, after.camera, after.species, int(after.unknown), after.hits, after.score,
             after.start_ts, after.last_ts),
        )
