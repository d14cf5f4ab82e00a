"""Regions -> tracks: the same bird across frames keeps one id. Pure: state in, state out.

A bird is followed so that it is classified when the look is good rather than on every frame,
and counted once however long it stays. Association is greedy on a cost that mixes overlap
with the position predicted from the track's own velocity (constant velocity), so two birds
whose paths cross keep their ids; a track unseen for `max_gap_s` (a bird that sat still, or
hid behind the feeder) is dropped, and ids are never reused within a camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from camtrap.config.models import TracksConfig
from camtrap.motion.regions import Box

SMOOTH = 0.5  # weight of the newest velocity: one merged or jittery region does not steer
MAX_SIZE_RATIO = 3.0  # a region 3x the track's size (or a third) is another object


@dataclass(frozen=True)
class Track:
    id: int
    box: Box  # the latest region matched, frame pixels
    vx: float  # centre velocity, pixels per second of `Frame.clock`
    vy: float
    first: float  # clock of the first and latest regions
    last: float
    hits: int = 1


@dataclass(frozen=True)
class Tracks:
    """One camera's tracks; `next_id` keeps ids unique even after every track has ended."""

    tracks: tuple[Track, ...] = ()
    next_id: int = 1


def centre(box: Box) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def iou(a: Box, b: Box) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def predict(track: Track, clock: float, horizon: float) -> Box:
    """Where the track's region should be at `clock`, extrapolated at most `horizon` s."""
    dt = min(max(clock - track.last, 0.0), horizon)
    x, y, w, h = track.box
    return (round(x + track.vx * dt), round(y + track.vy * dt), w, h)


def cost(track: Track, region: Box, clock: float, cfg: TracksConfig) -> float | None:
    """Lower is a better match; None when the region cannot be this track.

    Distance is measured from the predicted position and from the last seen one, whichever
    is nearer: a bird that stopped while out of sight reappears where it was, not where its
    old velocity would have carried it.
    """
    side_t, side_r = max(track.box[2:]), max(region[2:])
    ratio = side_r / max(side_t, 1)
    if not 1 / MAX_SIZE_RATIO <= ratio <= MAX_SIZE_RATIO:
        return None
    rx, ry = centre(region)
    scale = max(side_t, side_r)
    best: float | None = None
    for guess in (predict(track, clock, cfg.max_gap_s), track.box):
        gx, gy = centre(guess)
        dist = math.hypot(rx - gx, ry - gy) / scale
        overlap = iou(guess, region)
        if dist > cfg.max_jump and overlap < cfg.min_iou:
            continue
        c = dist + (1.0 - overlap) + 0.5 * abs(math.log(ratio))
        best = c if best is None else min(best, c)
    return best


def associate(
    state: Tracks, regions: list[Box], clock: float, cfg: TracksConfig
) -> tuple[Tracks, list[int]]:
    """The track id of each region (same order) and the new state.

    Greedy on the cheapest pair first, which for a handful of regions per frame gives the
    same answer as an optimal assignment in all but contrived cases, in a few lines.
    """
    alive = [t for t in state.tracks if clock - t.last <= cfg.max_gap_s]
    pairs = sorted(
        (c, i, j)
        for i, t in enumerate(alive)
        for j, r in enumerate(regions)
        if (c := cost(t, r, clock, cfg)) is not None
    )
    match: dict[int, int] = {}  # region index -> track index
    used: set[int] = set()
    for _, i, j in pairs:
        if i not in used and j not in match:
            match[j] = i
            used.add(i)
    updated = {i: _moved(alive[i], regions[j], clock) for j, i in match.items()}
    next_id = state.next_id
    ids: list[int] = []
    born: list[Track] = []
    for j, region in enumerate(regions):
        if j in match:
            ids.append(alive[match[j]].id)
            continue
        born.append(Track(next_id, region, 0.0, 0.0, clock, clock))
        ids.append(next_id)
        next_id += 1
    kept = tuple(updated.get(i, t) for i, t in enumerate(alive)) + tuple(born)
    return Tracks(kept, next_id), ids


def _moved(track: Track, region: Box, clock: float) -> Track:
    dt = clock - track.last
    if dt <= 0:
        return replace(track, box=region, hits=track.hits + 1)
    (ox, oy), (nx, ny) = centre(track.box), centre(region)
    vx, vy = (nx - ox) / dt, (ny - oy) / dt
    if track.hits > 1:  # a second sighting sets the velocity; later ones refine it
        vx, vy = SMOOTH * vx + (1 - SMOOTH) * track.vx, SMOOTH * vy + (1 - SMOOTH) * track.vy
    return replace(track, box=region, vx=vx, vy=vy, last=clock, hits=track.hits + 1)
