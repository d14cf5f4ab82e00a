"""Which looks at a track go to the classifier. Pure: geometry and time only.

A bird sitting at the feeder for a minute gives ~300 regions at 5 fps, all nearly the same
picture: classifying each costs a forward pass and adds nothing. A track's first looks go at
once (the first event is not delayed); after that a look goes only when it is clearly better
than the best one sent (larger, sharper, no longer cut by the frame edge) or as a refresh,
whose interval doubles while the track lasts (a bird that stays long is looked at rarely).
Nothing comes back from the classifier: the camera thread decides on what it sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from camtrap.config.models import TracksConfig
from camtrap.motion.regions import Box

EDGE_PX = 2  # an object this close to the frame's border is cut by it
EPS = 1e-6  # s: frame clocks are sums of floats; 1.4 - 0.4 must count as 1 s


@dataclass(frozen=True)
class Look:
    side: int  # the region's side, frame pixels: larger is more bird
    sharpness: float  # variance of the Laplacian of the crop: larger is in focus, unblurred
    cut: bool  # the moving object touches the frame edge: part of the bird is missing
    offset: float  # the object's centre off the region's centre, in region sides


@dataclass(frozen=True)
class LookState:
    sent: int  # looks of this track sent so far
    last: float  # clock of the latest look sent
    best: Look  # the best look sent
    refresh: float  # the current refresh interval


def sharpness(crop_rgb: np.ndarray) -> float:
    """Variance of the Laplacian: the usual focus measure (motion blur lowers it too)."""
    grey = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def measure(region: Box, boxes: list[Box], frame_size: tuple[int, int], crop_rgb: np.ndarray
            ) -> Look:
    """The look of a region: its size, the crop's focus, and where the moving object (the
    union of the motion boxes that overlap the region) sits in the region and the frame."""
    x, y, w, h = region
    inside = [b for b in boxes
              if b[0] < x + w and x < b[0] + b[2] and b[1] < y + h and y < b[1] + b[3]]
    if inside:
        x0, y0 = min(b[0] for b in inside), min(b[1] for b in inside)
        x1 = max(b[0] + b[2] for b in inside)
        y1 = max(b[1] + b[3] for b in inside)
    else:
        x0, y0, x1, y1 = x, y, x + w, y + h
    fw, fh = frame_size
    cut = x0 <= EDGE_PX or y0 <= EDGE_PX or x1 >= fw - EDGE_PX or y1 >= fh - EDGE_PX
    off = math.hypot((x0 + x1) / 2 - (x + w / 2), (y0 + y1) / 2 - (y + h / 2)) / max(w, 1)
    return Look(max(w, h), sharpness(crop_rgb), cut, off)


def better(new: Look, best: Look, cfg: TracksConfig) -> bool:
    """Clearly better than the best look sent, so worth a forward pass."""
    if new.offset > cfg.max_offset or (new.cut and not best.cut):
        return False
    if best.cut and not new.cut:
        return new.side * cfg.larger >= best.side  # the whole bird now, not much smaller
    if new.side >= best.side * cfg.larger:
        return True
    return new.sharpness >= best.sharpness * cfg.sharper and new.side * cfg.larger >= best.side


def decide(state: LookState | None, look: Look, clock: float, cfg: TracksConfig
           ) -> tuple[bool, LookState]:
    """(classify this look?, the track's new state)."""
    if state is None:
        return True, LookState(1, clock, look, cfg.refresh_s)
    since = clock - state.last + EPS
    if state.sent < cfg.first_looks:
        return True, _sent(state, look, clock, cfg)
    if since >= state.refresh:
        new = _sent(state, look, clock, cfg)
        return True, replace(new, refresh=min(state.refresh * 2, cfg.refresh_max_s))
    if since >= cfg.better_interval_s and better(look, state.best, cfg):
        return True, _sent(state, look, clock, cfg)
    return False, state


def _sent(state: LookState, look: Look, clock: float, cfg: TracksConfig) -> LookState:
    best = look if better(look, state.best, cfg) else state.best
    return replace(state, sent=state.sent + 1, last=clock, best=best)
