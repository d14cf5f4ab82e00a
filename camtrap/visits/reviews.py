"""Review rules: what a person's verdict on a visit does to it. Pure: no I/O, time comes in.

A visit carries its review state beside what the model said: a `status` (the latest
verdict), a `reviewed_species` (set by a correction), `keep` (exempt from retention) and
`deleted_ts` (soft delete, restorable until retention removes the visit). Deleting is kept
apart from the verdict, so a restored visit gets its verdict back.

The *effective species* is `reviewed_species` when a correction set it, else the model's;
a visit counts as a bird sighting (rollups, summaries, digest, visits today) unless it was
deleted or rejected ("not a bird").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

Action = Literal["confirm", "correct", "reject", "delete", "restore", "keep", "unkeep", "reset"]
ACTIONS: tuple[str, ...] = get_args(Action)
Status = Literal["unreviewed", "confirmed", "corrected", "rejected"]
STATUSES: tuple[str, ...] = get_args(Status)

MAX_SPECIES_LEN = 200
MAX_NOTE_LEN = 2000
# What may still be done to a deleted visit; anything else asks for a restore first, so a
# verdict is never given on something the reviewer no longer sees.
ON_DELETED = frozenset({"restore", "keep", "unkeep", "delete"})


class ReviewError(ValueError):
    """A review that cannot be applied (unknown action, missing species, ...): a 4xx."""


@dataclass(frozen=True)
class ReviewState:
    status: Status = "unreviewed"
    reviewed_species: str | None = None
    keep: bool = False
    deleted_ts: float | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_ts is not None

    @property
    def counts(self) -> bool:
        """Counted as a bird: not deleted and not rejected."""
        return self.deleted_ts is None and self.status != "rejected"

    @property
    def public_status(self) -> str:
        """The `review.status` users see: `deleted` wins over the verdict."""
        return "deleted" if self.deleted_ts is not None else self.status


def effective_species(model_species: str, state: ReviewState) -> str:
    return state.reviewed_species if state.reviewed_species is not None else model_species


def effective_unknown(model_unknown: bool, state: ReviewState) -> bool:
    """A correction names a species, so the visit leaves the unknown tier."""
    return model_unknown and state.reviewed_species is None


def check(action: str, species: str | None, note: str | None = None) -> tuple[Action, str | None]:
    """Validate a request's action and species (stripped; required for `correct`, ignored
    otherwise). Raises ReviewError."""
    if action not in ACTIONS:
        raise ReviewError(f"action: must be one of {', '.join(ACTIONS)}, not {action!r}")
    if note is not None and len(note) > MAX_NOTE_LEN:
        raise ReviewError(f"note: longer than {MAX_NOTE_LEN} characters")
    if action != "correct":
        return action, None  # type: ignore[return-value]
    if not isinstance(species, str) or not species.strip():
        raise ReviewError("species: required to correct a visit")
    species = species.strip()
    if len(species) > MAX_SPECIES_LEN or any(ord(c) < 32 for c in species):
        raise ReviewError("species: not a species name")
    return action, species  # type: ignore[return-value]


def apply(
    state: ReviewState, model_species: str, action: str, species: str | None, now: float
) -> ReviewState:
    """The state after `action`. Correcting to the model's own species is a confirmation;
    deleting a deleted visit keeps its first deletion time (retention counts from it)."""
    action, species = check(action, species)
    if state.deleted and action not in ON_DELETED:
        raise ReviewError(f"{action}: the visit is deleted; restore it first")
    match action:
        case "confirm":
            return replace(state, status="confirmed", reviewed_species=None)
        case "correct":
            if species == model_species:
                return replace(state, status="confirmed", reviewed_species=None)
            return replace(state, status="corrected", reviewed_species=species)
        case "reject":
            return replace(state, status="rejected", reviewed_species=None)
        case "reset":
            return replace(state, status="unreviewed", reviewed_species=None)
        case "delete":
            return state if state.deleted else replace(state, deleted_ts=now)
        case "restore":
            return replace(state, deleted_ts=None)
        case "keep":
            return replace(state, keep=True)
        case "unkeep":
            return replace(state, keep=False)
    raise AssertionError(action)  # pragma: no cover - check() covers every action


@dataclass(frozen=True)
class ReviewedVisit:
    """A stored visit with its review state: what `Store.review` reads back inside its
    transaction, to build the `type: "review"` MQTT message from."""

    visit_id: str
    camera: str
    model_species: str
    model_unknown: bool
    score: float
    top_k: tuple[tuple[str, float], ...]
    hits: int
    start_ts: float
    last_ts: float
    end_ts: float | None
    box: tuple[int, int, int, int] | None
    crop_file: str | None
    state: ReviewState
    review_ts: float | None
    review_user: str | None

    @property
    def species(self) -> str:
        return effective_species(self.model_species, self.state)

    @property
    def unknown(self) -> bool:
        return effective_unknown(self.model_unknown, self.state)


@dataclass(frozen=True)
class ReviewOutcome:
    """One applied review: the visit before and after, and its `reviews` row id."""

    action: Action
    review_id: int
    before: ReviewedVisit
    after: ReviewedVisit
    note: str | None = None

    @property
    def species_changed(self) -> bool:
        return self.before.species != self.after.species

    @property
    def counting_changed(self) -> bool:
        """Whether rollups, summaries and counts can differ: the effective species, the
        unknown tier or whether the visit counts as a bird changed."""
        b, a = self.before, self.after
        return (b.species, b.unknown, b.state.counts) != (a.species, a.unknown, a.state.counts)
