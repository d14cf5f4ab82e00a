"""Per-crop predictions -> bird visits. Pure logic: no threads, no I/O, time comes in.

A visit is one species at one camera: it starts when `min_hits` predictions reach the
species' threshold within `window_s`, is updated when its best score improves (at most every
`update_interval_s`), and ends `end_after_s` after its last hit.

Crops that carry a `track_id` (tracks on) are looks at one bird, and the bird's species is a
vote over its track's looks: at least `min_hits` looks name the species and they are at
least `tracks.agree` of the track's looks; a track whose looks do not agree is an unknown
bird. One lucky frame does not name a bird, and a false region whose looks wander does not
keep a visit open. The visit key stays camera + species (so `visit_id` keeps its meaning):
two birds of one species at once are one visit whose `count` is the most of its tracks
seen at the same time.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from camtrap.config.models import TracksConfig, VisitsConfig
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
    count: int = 1  # the most birds of this species seen at once (tracks at the same time)
    track_ids: tuple[int, ...] = ()  # the camera's tracks that made the visit (tracks on)
    looks: int = 0  # crops of the visit's tracks that went to the classifier


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
    spans: dict[int, tuple[float, float]] = field(default_factory=dict)  # track: first, last
    looks: int = 0
    count: int = 1

    def join(self, track_id: int, first: float, last: float) -> None:
        """A track's looks count for this visit; `count` is the most spans that overlap."""
        self.spans[track_id] = (first, last)
        self.count = max(self.count, most_at_once(list(self.spans.values())))

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
            count=self.count,
            track_ids=tuple(sorted(self.spans)),
            looks=self.looks or self.hits,
        )


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals that share a moment (a few tracks per visit: quadratic is fine)."""
    return max((sum(1 for a, b in spans if a <= t <= b) for t, _ in spans), default=0)


@dataclass(frozen=True)
class Vote:
    species: str
    unknown: bool
    votes: int  # looks that name `species` (or, for the unknown tier, every bird look)
    looks: int  # the track's looks that are birds at all


def vote(
    tiers: list[tuple[str, bool] | None], min_looks: int, agree: float, unknown: bool = True
) -> Vote | None:
    """A track's species from its looks' tiers, or None while undecided.

    Named: `min_looks` looks name it and they are at least `agree` of the bird looks. The
    unknown tier: the uncertain looks alone agree, or `min_looks + 1` bird looks do not
    agree on a name (three different answers are one bird we cannot name).
    """
    birds = [t for t in tiers if t is not None]
    n = len(birds)
    if n < min_looks:
        return None
    named = Counter(s for s, u in birds if not u)
    if named:
        species, c = max(named.items(), key=lambda kv: (kv[1], kv[0]))
        if c >= min_looks and c >= agree * n:
            return Vote(species, False, c, n)
    if not unknown:
        return None
    uncertain = [s for s, u in birds if u]
    if (len(uncertain) >= min_looks and len(uncertain) >= agree * n) or n > min_looks:
        return Vote(uncertain[0] if uncertain else "", True, n, n)
    return None


@dataclass
class _Track:
    """The looks at one tracked bird, for its vote."""

    tiers: list[tuple[str, bool] | None] = field(default_factory=list)
    preds: list[Prediction] = field(default_factory=list)  # bird looks, for the best crop
    first_ts: float = 0.0
    first: float = 0.0  # `Crop.clock` of the first and latest looks
    last: float = 0.0
    visit: tuple[str, str] | None = None  # the visit it counts for


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
    def __init__(
        self,
        cfg: VisitsConfig,
        labels: list[str],
        jpeg_quality: int = 90,
        tracks: TracksConfig | None = None,
    ) -> None:
        problems = unknown_names(cfg, labels)
        if problems:
            raise ValueError("; ".join(problems))
        self.cfg = cfg
        self.tracks_cfg = tracks or TracksConfig()  # `agree`, for crops that carry a track
        self._tracks: dict[tuple[str, int], _Track] = {}
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
        if pred.crop.track_id is not None:
            return self._observe_track(pred)
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

    def _observe_track(self, pred: Prediction) -> list[VisitEvent]:
        """A look at a tracked bird: it votes; once the track's vote names a species (or the
        unknown tier) the track joins that species' visit at its camera, starting it."""
        crop = pred.crop
        assert crop.track_id is not None
        key = (crop.camera, crop.track_id)
        label, score = pred.top_k[0]
        tier = self.tier(label, score)
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track(first_ts=crop.ts, first=crop.clock)
        track.tiers.append(tier)
        track.last = max(track.last, crop.clock)
        if tier is not None:
            track.preds.append(pred)
        decided = vote(track.tiers, self.cfg.min_hits, self.tracks_cfg.agree,
                       self.cfg.unknown.enabled)
        if decided is None:
            return []
        species = self.cfg.unknown.label if decided.unknown else decided.species
        camera = crop.camera
        if decided.unknown and any(
            cam == camera and not v.unknown for (cam, _), v in self._open.items()
        ):
            return []  # an uncertain bird beside one we named: most likely the same bird
        vkey = (camera, species)
        visit = self._open.get(vkey)
        agreeing = [p for p, t in zip(track.preds, [t for t in track.tiers if t], strict=True)
                    if decided.unknown or t == (species, False)]
        if visit is None:
            best = max(agreeing, key=lambda p: p.top_k[0][1])
            visit = _Visit(
                visit_id=visit_id(camera, species, track.first_ts),
                camera=camera,
                species=species,
                unknown=decided.unknown,
                start_ts=track.first_ts,
                last_ts=crop.ts,
                hits=len(agreeing),
                best=best,
                best_score=best.top_k[0][1],
                last_seen=crop.clock,
                last_event=crop.clock,
                looks=len(track.tiers),
            )
            track.visit = vkey
            visit.join(crop.track_id, track.first, track.last)
            self._open[vkey] = visit
            return [visit.event("start", self.quality)]
        if track.visit != vkey:  # a new track (or one whose vote changed) joins the visit
            track.visit = vkey
            visit.looks += len(track.tiers)
            visit.join(crop.track_id, track.first, track.last)
            earlier = [p for p in agreeing if p is not pred]  # `pred` itself: below
            visit.hits += len(earlier)
            for p in earlier:
                if p.top_k[0][1] > visit.best_score:
                    visit.best, visit.best_score, visit.improved = p, p.top_k[0][1], True
        else:
            visit.looks += 1
            visit.join(crop.track_id, track.first, track.last)
        if tier is None or (not decided.unknown and tier != (species, False)):
            # the same bird, a poor or dissenting look: it is still here, but not a hit
            visit.last_seen = max(visit.last_seen, crop.clock)
            return []
        return self._hit(visit, pred, score)

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
        for key in [k for k, t in self._tracks.items() if now - t.last > self.cfg.end_after_s]:
            del self._tracks[key]  # ids are never reused: a quiet track has ended
        ended = [k for k, v in self._open.items() if now - v.last_seen >= self.cfg.end_after_s]
        return [self._end(k, self._open[k].last_ts) for k in ended]

    def flush(self) -> list[VisitEvent]:
        """End every open visit now (shutdown, end of a replay)."""
        self._candidates.clear()
        self._tracks.clear()
        return [self._end(k, self._open[k].last_ts) for k in list(self._open)]

    def _end(self, key: tuple[str, str], end_ts: float) -> VisitEvent:
        return self._open.pop(key).event("end", self.quality, end_ts=end_ts)
