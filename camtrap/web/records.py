"""What the web interface's reads return: small frozen dataclasses, the visit row parser,
and the `Source` the statistics in stats.py read through (the Reader of queries.py).

Species everywhere is the *effective* species: the reviewed one when a review set it, else
the model's.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, tzinfo
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

# A visit's review status (the `status` column): what the last verdict said. Deleting is
# orthogonal (`deleted_ts`), so a restored visit gets its verdict back.
STATUSES = ("unreviewed", "confirmed", "corrected", "rejected")
# What a `status` filter accepts: a status, or one of these groups.
STATUS_FILTERS = (*STATUSES, "reviewed", "deleted", "kept", "all")

DEFAULT_LIMIT = 48
MAX_LIMIT = 500


@dataclass(frozen=True)
class Review:
    """Where a reviewed visit stands: `status` (confirmed | corrected | rejected |
    deleted), the effective species, who and when (Unix seconds) of the latest review."""

    status: str
    species: str
    user: str | None
    ts: float | None


@dataclass(frozen=True)
class ReviewEntry:
    """One row of the review history (the `reviews` table)."""

    id: int
    visit_id: str
    ts: float
    user: str | None
    action: str
    old_species: str | None
    new_species: str | None
    note: str | None


@dataclass(frozen=True)
class Visit:
    """One visit as the interface shows it. `species` is the effective species and
    `model_species` what the model said; `unknown` is the model's unknown tier unless a
    correction named a species."""

    visit_id: str
    camera: str
    species: str
    model_species: str
    unknown: bool
    score: float
    top_k: tuple[tuple[str, float], ...]
    hits: int
    start_ts: float
    last_ts: float
    end_ts: float | None
    box: tuple[int, int, int, int] | None  # x, y, w, h in frame pixels
    crop_file: str | None  # relative to the state directory
    context_file: str | None  # downscaled context frame, relative to the state directory
    status: str  # one of STATUSES
    reviewed_species: str | None
    keep: bool
    deleted_ts: float | None
    review_user: str | None
    review_ts: float | None
    frame_size: tuple[int, int] | None = None  # (w, h) of the frame the box is in

    @property
    def deleted(self) -> bool:
        return self.deleted_ts is not None

    @property
    def ended(self) -> bool:
        """An ended visit's crop no longer changes: its thumbnail may be cached forever."""
        return self.end_ts is not None

    @property
    def review(self) -> Review | None:
        """None while no verdict stands and the visit is not deleted (keeping a visit, or a
        `reset`, is no verdict)."""
        if self.status == "unreviewed" and self.deleted_ts is None:
            return None
        status = "deleted" if self.deleted_ts is not None else self.status
        return Review(status, self.species, self.review_user, self.review_ts)


@dataclass(frozen=True)
class Cursor:
    """Keyset position: the last visit of a page (lists run newest first)."""

    start_ts: float
    visit_id: str

    def encode(self) -> str:
        return f"{self.start_ts!r}_{self.visit_id}"

    @staticmethod
    def decode(text: str) -> Cursor:
        """Raises ValueError on anything that is not a cursor this module made."""
        ts, sep, vid = text.partition("_")
        if not sep or not vid or len(text) > 200:
            raise ValueError(f"not a cursor: {text!r}")
        return Cursor(float(ts), vid)


@dataclass(frozen=True)
class VisitFilter:
    """What a visits list shows. Dates are local days of the configured zone, both ends
    included; `status` is one of STATUS_FILTERS (None: every visit not deleted)."""

    camera: str | None = None
    species: str | None = None  # effective species
    date_from: date | None = None
    date_to: date | None = None
    min_score: float | None = None
    max_score: float | None = None
    status: str | None = None
    unknown: bool | None = None  # True: only the unknown tier; False: only named species
    visit_ids: tuple[str, ...] | None = None  # bulk selections


@dataclass(frozen=True)
class VisitPage:
    visits: list[Visit]
    next: str | None  # cursor of the next (older) page; None on the last page


@dataclass(frozen=True)
class Neighbours:
    """The visits before and after one in a list's order (newest first): `newer` is
    "previous" on screen, `older` is "next"."""

    newer: str | None
    older: str | None


@dataclass(frozen=True)
class SpeciesRow:
    """One row of the day grid: a species' visits by local hour and its best visit."""

    species: str
    unknown: bool
    visits: int
    hourly: tuple[int, ...]  # 24 counts of visit starts by local hour
    first_ts: float
    last_ts: float
    best_score: float
    best_visit_id: str
    best_crop: str | None
    new_ever: bool
    first_this_year: bool


@dataclass(frozen=True)
class CameraHours:
    """Per local hour of one camera: "up" (watched and connected), "down" (watched but
    disconnected), "paused" (outside active hours), "mixed" or "unknown" (no record).
    `uptime` is the day's fraction from `camera_uptime` (None: not recorded)."""

    camera: str
    hours: tuple[str, ...]
    uptime: float | None
    seconds_up: float | None
    seconds_watched: float | None
    seconds_paused: float | None


@dataclass(frozen=True)
class DayGrid:
    day: date
    visits: int
    species_count: int  # named species, the unknown tier not counted
    hourly: tuple[int, ...]
    species: list[SpeciesRow]
    cameras: list[CameraHours]
    summary_json: str | None  # relative to the state dir, when the night's summary exists
    summary_image: str | None
    previous_day: date | None  # the nearest earlier day with visits
    next_day: date | None  # the nearest later day with visits


@dataclass(frozen=True)
class SpeciesStats:
    """A species page: sightings from visits and from rollups of visits retention deleted,
    and what reviews say of the model for it."""

    species: str
    first_ever_ts: float | None
    first_this_year_ts: float | None
    last_seen_ts: float | None
    visits: int  # visits stored now (effective species)
    by_day: list[tuple[date, int]]  # the last `days` days, oldest first
    by_hour: tuple[int, ...]  # 24
    by_camera: dict[str, int]
    best: list[Visit]  # best crops, highest score first
    confirmed: int  # model said this species and a reviewer confirmed it
    corrected_away: int  # model said this species and a reviewer changed it
    corrected_to: dict[str, int]  # ... to what
    corrected_from: dict[str, int]  # reviewers changed other species' visits to this one
    rejected: int  # model said this species; "not a bird"


@dataclass(frozen=True)
class NeedsReview:
    """The review queue: unreviewed visits worth a look, each group newest first."""

    unknown: list[Visit]
    low_score: list[Visit]
    first_ever: list[Visit]  # each species' first visit ever, when unreviewed
    first_this_year: list[Visit]
    total_unreviewed: int


@dataclass(frozen=True)
class Similar:
    visit: Visit
    similarity: float  # cosine of the stored 384-d embeddings, -1..1


@dataclass(frozen=True)
class SpeciesCount:
    species: str
    visits: int
    unknown: bool


class Source(Protocol):
    """What stats.py needs of a reader: its zone, state directory and settings, and
    queries on its own read-only connection."""

    state_dir: Path
    tz: tzinfo
    low_score: float
    unknown_label: str | None
    _embeddings: Any

    def _db(self) -> sqlite3.Connection: ...
    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]: ...
    def _one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None: ...
    def _cached(self, name: str, make: Callable[[], T]) -> T: ...
    def species_list(self) -> list[SpeciesCount]: ...


VISIT_COLUMNS = (
    "visit_id, camera, species, unknown, best_score, top_k, hits, start_ts, last_ts, end_ts,"
    " box, frame_size, crop_file, context_file, status, reviewed_species, keep, deleted_ts,"
    " review_user, review_ts"
)


def visit_from_row(r: sqlite3.Row) -> Visit:
    """A `visits` row (VISIT_COLUMNS) as the interface shows it."""
    box = json.loads(r["box"]) if r["box"] else None
    size = json.loads(r["frame_size"]) if r["frame_size"] else None
    reviewed = r["reviewed_species"]
    return Visit(
        visit_id=r["visit_id"],
        camera=r["camera"],
        species=reviewed if reviewed is not None else r["species"],
        model_species=r["species"],
        unknown=bool(r["unknown"]) and reviewed is None,
        score=r["best_score"],
        top_k=tuple((str(s), float(p)) for s, p in json.loads(r["top_k"])),
        hits=r["hits"],
        start_ts=r["start_ts"],
        last_ts=r["last_ts"],
        end_ts=r["end_ts"],
        box=tuple(box) if box else None,  # type: ignore[arg-type]
        crop_file=r["crop_file"],
        context_file=r["context_file"],
        status=r["status"],
        reviewed_species=reviewed,
        keep=bool(r["keep"]),
        deleted_ts=r["deleted_ts"],
        review_user=r["review_user"],
        review_ts=r["review_ts"],
        frame_size=tuple(size) if size else None,  # type: ignore[arg-type]
    )
