"""Motion filter: cheap enough to run on every looked-at frame of every camera, all day.

Everything happens on a small luma image (`motion.height`, about 135-180 px high):

1. Downscale: one source row per output row, `f` neighbouring columns averaged, `f` an
   integer so OpenCV takes its fast area path. A 1080p frame costs well under a millisecond
   (a full area average costs about 1.6 ms, MOG2 on the full frame 13-40 ms), and the
   averaging still hides most sensor noise, unlike nearest or bilinear sampling.
2. Contrast: luma stretched between its 4th and 96th percentiles (smoothed over frames, gain
   capped so the noise of a flat scene is not blown up), so haze and dusk keep their motion.
3. Blur, then foreground: |frame - background| > threshold, outside the masks.
4. More than `max_changed` of the picture in the foreground at once (lights, the IR switch, a
   cloud) is no motion: the background is reset to this frame instead (recalibrated).
5. Foreground blobs (dilated, connected) of at least `min_area` that also changed since the
   previous looked-at frame are motion. A blob that is only different from the background
   but not changing is still: a moved feeder, or the ghost a bird leaves behind.
6. Background: pixels outside the blobs learn at `alpha`. A moving blob does not learn at all,
   so a bird that keeps moving is never absorbed however long it stays; a blob that has been
   still for `absorb_after_s` is copied into the background.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from camtrap.config.models import MotionConfig
from camtrap.motion.regions import Box

LOW_PERCENTILE, HIGH_PERCENTILE = 0.04, 0.96
MIN_CONTRAST_RANGE = 96.0  # caps the contrast gain at 2.7: noise stays below threshold
CONTRAST_SMOOTHING = 0.05  # weight of the newest percentiles: a slow, stable stretch
# A blob moves when this many of its pixels changed since the last looked-at frame (and at
# least MIN_MOVING_PX): noise alone flips well under 1% of a still blob's pixels.
MOVING_SHARE = 0.03
MIN_MOVING_PX = 3


@dataclass(frozen=True)
class MotionResult:
    boxes: list[Box]  # moving objects, in the pixels of the frame that was given
    changed: float  # fraction of the (unmasked) picture that differs from the background
    recalibrated: bool = False  # the background was reset to this frame: no motion reported


def downscale_factor(height: int, target: int) -> int:
    """The integer factor that brings `height` closest to `target` (at least 1)."""
    return max(1, round(height / target))


def small_luma(frame: np.ndarray, target_height: int) -> tuple[np.ndarray, int]:
    """Luma of `frame` shrunk by an integer factor `f` to about `target_height`: (image, f).

    Pixel (x, y) of the result covers source columns [x f, (x+1) f) of source row y f + f/2.
    """
    h, w = frame.shape[:2]
    f = downscale_factor(h, target_height)
    sh, sw = max(1, h // f), max(1, w // f)
    rows = frame[f // 2 : sh * f : f, : sw * f]
    if rows.ndim == 3:
        rows = cv2.cvtColor(rows, cv2.COLOR_BGR2GRAY)
    if f == 1:
        return np.ascontiguousarray(rows), 1
    return cv2.resize(rows, (sw, sh), interpolation=cv2.INTER_AREA), f


def percentiles(grey: np.ndarray) -> tuple[float, float]:
    """The 4th and 96th percentiles of a uint8 image, from its histogram (fast)."""
    hist = cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel()
    cdf = np.cumsum(hist)
    total = cdf[-1]
    lo = int(np.searchsorted(cdf, LOW_PERCENTILE * total))
    hi = int(np.searchsorted(cdf, HIGH_PERCENTILE * total))
    return float(lo), float(hi)


def stretch_lut(lo: float, hi: float) -> np.ndarray:
    """A 256-entry table mapping [lo, hi] to [0, 255], the range widened to at least
    MIN_CONTRAST_RANGE around its middle so a flat, noisy scene is not amplified."""
    if hi - lo < MIN_CONTRAST_RANGE:
        mid = (lo + hi) / 2
        lo, hi = mid - MIN_CONTRAST_RANGE / 2, mid + MIN_CONTRAST_RANGE / 2
    values = (np.arange(256, dtype=np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)


def polygon_mask(
    masks: list[list[tuple[float, float]]], width: int, height: int
) -> np.ndarray | None:
    """255 where motion counts, 0 inside the masked polygons (relative coordinates)."""
    if not masks:
        return None
    mask = np.full((height, width), 255, np.uint8)
    for poly in masks:
        pts = np.array([(x * width, y * height) for x, y in poly], np.float32)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 0)
    return mask


def changed_pixels(
    grey: np.ndarray, reference: np.ndarray, threshold: int, mask: np.ndarray | None
) -> np.ndarray:
    """255 where `grey` differs from `reference` by more than `threshold`, outside masks."""
    diff = cv2.absdiff(grey, reference)
    _, binary = cv2.threshold(diff, threshold, 255, cv2.THRESH_BINARY)
    return binary if mask is None else cv2.bitwise_and(binary, mask)


def blobs(
    fg: np.ndarray, moving: np.ndarray, dilate: int, min_px: float
) -> tuple[list[Box], np.ndarray, np.ndarray]:
    """Connected foreground blobs: (boxes of the moving ones of at least `min_px` foreground
    pixels, the dilated foreground, a bool image of the pixels of moving blobs)."""
    grown = cv2.dilate(fg, None, iterations=dilate) if dilate else fg
    n, labels, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    if n <= 1:
        return [], grown, np.zeros(fg.shape, bool)
    fg_px = np.bincount(labels[fg > 0], minlength=n)
    moving_px = np.bincount(labels[moving > 0], minlength=n)
    active = moving_px >= np.maximum(MIN_MOVING_PX, MOVING_SHARE * fg_px)
    active[0] = False  # label 0 is the background
    report = active & (fg_px >= max(min_px, 1))
    boxes = [tuple(int(v) for v in stats[i, :4]) for i in np.flatnonzero(report)]
    return boxes, grown, active[labels]  # type: ignore[return-value]


def to_frame_boxes(boxes: list[Box], f: int, width: int, height: int) -> list[Box]:
    """Boxes of the small image in the pixels of the frame it was made from."""
    out: list[Box] = []
    for x, y, w, h in boxes:
        x0, y0 = x * f, y * f
        out.append((x0, y0, min(w * f, width - x0), min(h * f, height - y0)))
    return out


@dataclass
class MotionDetector:
    """One camera's motion state (background, previous frame, stillness timers); the work
    itself is in the pure functions above."""

    cfg: MotionConfig
    masks: list[list[tuple[float, float]]] = field(default_factory=list)
    _background: np.ndarray | None = None  # float32, normalised blurred luma
    _previous: np.ndarray | None = None
    _still_since: np.ndarray | None = None  # float64 ts per pixel; NaN when not still
    _mask: np.ndarray | None = None
    _area: int = 1
    _contrast: tuple[float, float] | None = None

    def reset(self) -> None:
        """Forget the background (the next frame starts a new one)."""
        self._background = None
        self._contrast = None

    def normalise(self, grey: np.ndarray) -> np.ndarray:
        """Contrast stretch (smoothed over frames) and blur of a small luma image."""
        if self.cfg.contrast:
            lo, hi = percentiles(grey)
            if self._contrast is not None:
                a = CONTRAST_SMOOTHING
                lo = a * lo + (1 - a) * self._contrast[0]
                hi = a * hi + (1 - a) * self._contrast[1]
            self._contrast = (lo, hi)
            grey = cv2.LUT(grey, stretch_lut(lo, hi))
        if self.cfg.blur > 1:
            grey = cv2.GaussianBlur(grey, (self.cfg.blur, self.cfg.blur), 0)
        return grey

    def _start(self, grey: np.ndarray) -> None:
        sh, sw = grey.shape
        if self._background is None or self._background.shape != grey.shape:
            self._mask = polygon_mask(self.masks, sw, sh)
            self._area = max(1, cv2.countNonZero(self._mask) if self._mask is not None else sw * sh)
        self._background = grey.astype(np.float32)
        self._previous = grey
        self._still_since = np.full(grey.shape, np.nan)

    def detect(self, frame: np.ndarray, ts: float | None = None) -> MotionResult:
        """Moving objects in `frame` (BGR or grey) as boxes in its pixels; learns from it.
        `ts` (seconds) times stillness; replay passes the video clock."""
        ts = time.monotonic() if ts is None else ts
        cfg = self.cfg
        raw, f = small_luma(frame, cfg.height)
        grey = self.normalise(raw)
        if self._background is None or self._background.shape != grey.shape:
            self._start(grey)
            return MotionResult([], 0.0, recalibrated=True)
        assert self._previous is not None and self._still_since is not None
        fg = changed_pixels(grey, cv2.convertScaleAbs(self._background), cfg.threshold, self._mask)
        changed = cv2.countNonZero(fg) / self._area
        if changed > cfg.max_changed:
            self._contrast = None  # snap to the new light at once, no drift afterwards
            self._start(self.normalise(raw))
            return MotionResult([], changed, recalibrated=True)

        self._previous, previous = grey, self._previous
        if changed == 0.0:  # the usual idle frame: everything learns, nothing is still
            cv2.accumulateWeighted(grey, self._background, cfg.alpha)
            self._still_since.fill(np.nan)
            return MotionResult([], 0.0)
        moving = changed_pixels(grey, previous, cfg.threshold, self._mask)
        min_px = cfg.min_area * grey.shape[0] * grey.shape[1]
        boxes, grown, active = blobs(fg, moving, cfg.dilate, min_px)
        self._learn(grey, grown, active, ts)
        h, w = frame.shape[:2]
        return MotionResult(to_frame_boxes(boxes, f, w, h), changed)

    def _learn(self, grey: np.ndarray, grown: np.ndarray, active: np.ndarray, ts: float) -> None:
        """Background update: see the module docstring, step 6."""
        assert self._background is not None and self._still_since is not None
        cv2.accumulateWeighted(grey, self._background, self.cfg.alpha, mask=cv2.bitwise_not(grown))
        still = (grown > 0) & ~active
        if not still.any():
            self._still_since.fill(np.nan)
            return
        since = np.where(still, np.fmin(self._still_since, ts), np.nan)
        absorb = still & (ts - since >= self.cfg.absorb_after_s - 1e-6)
        if absorb.any():
            self._background[absorb] = grey[absorb]
            since[absorb] = np.nan
        self._still_since = since

    @property
    def contrast(self) -> tuple[float, float] | None:
        """The smoothed (low, high) luma percentiles in use, for diagnostics."""
        return self._contrast

