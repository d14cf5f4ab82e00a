"""Per-crop predictions -> bird visits. Pure logic: no threads, no I/O, time comes in.

A visit is one bird (species) at one camera: it starts when `min_hits` predictions reach the
species' threshold within `window_s`, is updated when its best score improves (at most every
`update_interval_s`), and ends `end_after_s` after its last hit.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from camtrap.config.models import VisitsConfig
from camtrap.motion.regions import Box

if TYPE_CHECKING:
    from camtrap.inference.backend import Prediction

EventKind = Literal["start", "update", "end"]


@dataclass(frozen=True)
class VisitEvent:
    kind: EventKind
    visit_id: str
    camera: str
    species: str
    unknown: bool  # the "unknown bird" tier: a bird, but no species above its threshold
    score: float  # best score so far
    hits: int
    start_ts: float
    last_ts: float
    end_ts: float | None
    top_k: tuple[tuple[str, float], ...]  # at the best moment
    box: Box  # of the best crop, in frame pixels
    frame_size: tuple[int, int]
    crop_jpeg: bytes = field(repr=False)
    embedding: np.ndarray | None = field(default=None, repr=False)  # of the best crop
    context_jpeg: bytes | None = field(default=None, repr=False)  # the frame it was cut from


@dataclass
class _Visit:
    visit_id: str
    camera: str
    species: str
    unknown: bool
    start_ts: float  # wall-clock stamps, for events
    last_ts: float
    hits: int
    best: Prediction
    best_score: float
    last_seen: float  # `Crop.clock` of the latest sighting: durations never use stamps
    last_event: float  # `Crop.clock` of the latest event
    improved: bool = False

    def event(self, kind: EventKind, quality: int, end_ts: float | None = None) -> VisitEvent:
        rgb = self.best.crop.image
        ok, jpeg = cv2.imencode(
            ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
        return VisitEvent(
            kind=kind,
            visit_id=self.visit_id,
            camera=self.camera,
            species=self.species,
            unknown=self.unknown,
            score=self.best_score,
            hits=self.hits,
            start_ts=self.start_ts,
            last_ts=self.last_ts,
            end_ts=end_ts,
            top_k=self.best.top_k,
            box=self.best.crop.box,
            frame_size=self.best.crop.frame_size,
            crop_jpeg=jpeg.tobytes() if ok else b"",
            embedding=self.best.embedding,
            context_jpeg=self.best.crop.context_jpeg,
        )


def visit_id(camera: str, species: str, start_ts: float) -> str:
    """Stable across restarts and replays of the same footage."""
    raw = f"{camera}|{species}|{start_ts:.3f}".encode()
    return hashlib.sha1(raw).hexdigest()[:16]


def unknown_names(cfg: VisitsConfig, labels: list[str]) -> list[str]:
    """`field: name` for every species name in the config that the model does not know."""
    known = {label.casefold() for label in labels}
    bad = [
        f"visits.allow[{i}]: {n!r}" for i, n in enumerate(cfg.allow) if n.casefold() not in known
    ]
    bad += [f"visits.deny[{i}]: {n!r}" for i, n in enumerate(cfg.deny) if n.casefold() not in known]
    bad += [
        f"visits.species_thresholds.{n}"
        for n in cfg.species_thresholds
        if n.casefold() not in known
    ]
    return [f"{b}: not a species of this model" for b in bad]


class VisitTracker:
    def __init__(self, cfg: VisitsConfig, labels: list[str], jpeg_quality: int = 90) -> None:
        problems = unknown_names(cfg, labels)
        if problems:
            raise ValueError("; ".join(problems))
        self.cfg = cfg
        self.quality = jpeg_quality
        self._allow = {n.casefold() for n in cfg.allow}
        self._deny = {n.casefold() for n in cfg.deny}
        self._thresholds = {k.casefold(): v for k, v in cfg.species_thresholds.items()}
        self._candidates: dict[tuple[str, str], deque[Prediction]] = {}
        self._open: dict[tuple[str, str], _Visit] = {}

    @property
    def open_visits(self) -> int:
        return len(self._open)

    def tier(self, label: str, score: float) -> tuple[str, bool] | None:
        """(species, unknown) for a top-1 prediction, or None when it is discarded."""
        key = label.casefold()
        if key in self._deny or (self._allow and key not in self._allow):
            return None
        if score >= self._thresholds.get(key, self.cfg.threshold):
            return label, False
        if self.cfg.unknown.enabled and score >= self.cfg.unknown.floor:
            return self.cfg.unknown.label, True
        return None

    def observe(self, pred: Prediction) -> list[VisitEvent]:
        if not pred.top_k:
            return []
        label, score = pred.top_k[0]
        tier = self.tier(label, score)
        if tier is None:
            return []
        species, unknown = tier
        camera, clock = pred.crop.camera, pred.crop.clock
        if unknown and any(cam == camera and not v.unknown for (cam, _), v in self._open.items()):
            return []  # an uncertain look at a bird we already named
        key = (camera, species)
        visit = self._open.get(key)
        if visit is not None:
            return self._hit(visit, pred, score)

        hits = self._candidates.setdefault(key, deque())
        while hits and clock - hits[0].crop.clock > self.cfg.window_s:
            hits.popleft()
        hits.append(pred)
        if len(hits) < self.cfg.min_hits:
            return []
        del self._candidates[key]
        best = max(hits, key=lambda p: p.top_k[0][1])
        start = hits[0].crop.ts
        visit = _Visit(
            visit_id=visit_id(camera, species, start),
            camera=camera,
            species=species,
            unknown=unknown,
            start_ts=start,
            last_ts=pred.crop.ts,
            hits=len(hits),
            best=best,
            best_score=best.top_k[0][1],
            last_seen=clock,
            last_event=clock,
        )
        self._open[key] = visit
        return [visit.event("start", self.quality)]

    def _hit(self, visit: _Visit, pred: Prediction, score: float) -> list[VisitEvent]:
        visit.hits += 1
        clock = pred.crop.clock
        if clock >= visit.last_seen:
            visit.last_seen, visit.last_ts = clock, pred.crop.ts
        if score > visit.best_score:
            visit.best, visit.best_score, visit.improved = pred, score, True
        if visit.improved and clock - visit.last_event >= self.cfg.update_interval_s:
            visit.improved, visit.last_event = False, clock
            return [visit.event("update", self.quality)]
        return []

    def tick(self, now: float) -> list[VisitEvent]:
        """End visits quiet for `end_after_s`; forget stale candidates. `now` is on the
        crops' clock (`Crop.clock`: monotonic in the daemon, the video's in replay)."""
        window = self.cfg.window_s
        for key in [k for k, hits in self._candidates.items()
                    if now - hits[-1].crop.clock > window]:
            del self._candidates[key]
        ended = [k for k, v in self._open.items() if now - v.last_seen >= self.cfg.end_after_s]
        return [self._end(k, self._open[k].last_ts) for k in ended]

    def flush(self) -> list[VisitEvent]:
        """End every open visit now (shutdown, end of a replay)."""
        self._candidates.clear()
        return [self._end(k, self._open[k].last_ts) for k in list(self._open)]

    def _end(self, key: tuple[str, str], end_ts: float) -> VisitEvent:
        return self._open.pop(key).event("end", self.quality, end_ts=end_ts)
