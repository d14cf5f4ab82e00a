"""Motion filter: cheap enough to run all day on a quiet feeder.

Works on a small blurred luma image against a running-average background. A sudden change
over much of the picture (lights, IR switch, a cloud) is not motion: the background is reset
to the new picture instead of emitting a burst of crops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from camtrap.config import MotionConfig
from camtrap.regions import Box, scale_boxes


@dataclass(frozen=True)
class MotionResult:
    boxes: list[Box]  # in the pixels of the frame that was given
    changed: float  # fraction of (unmasked) pixels that changed
    recalibrated: bool = False


def polygon_mask(
    masks: list[list[tuple[float, float]]], width: int, height: int
) -> np.ndarray | None:
    """255 where motion counts, 0 inside the masked polygons (relative coordinates)."""
    if not masks:
        return None
    mask = np.full((height, width), 255, np.uint8)
    for poly in masks:
        pts = np.array([(x * (width - 1), y * (height - 1)) for x, y in poly], np.int32)
        cv2.fillPoly(mask, [pts], 0)
    return mask


@dataclass
class MotionDetector:
    """Per-camera state: the background model lives here; everything else is pure."""

    cfg: MotionConfig
    masks: list[list[tuple[float, float]]] = field(default_factory=list)
    _background: np.ndarray | None = None
    _mask: np.ndarray | None = None
    _size: tuple[int, int] = (0, 0)

    def small_luma(self, frame_bgr: np.ndarray) -> np.ndarray:
        h, w = frame_bgr.shape[:2]
        sh = min(self.cfg.height, h)
        sw = max(1, round(w * sh / h))
        small = cv2.resize(frame_bgr, (sw, sh), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(grey, (self.cfg.blur, self.cfg.blur), 0)

    def detect(self, frame_bgr: np.ndarray) -> MotionResult:
        """Motion boxes in `frame_bgr` pixels; updates the background."""
        grey = self.small_luma(frame_bgr)
        sh, sw = grey.shape
        if self._background is None or self._size != (sw, sh):
            self._size = (sw, sh)
            self._background = grey.astype(np.float32)
            self._mask = polygon_mask(self.masks, sw, sh)
            return MotionResult([], 0.0, recalibrated=True)

        diff = cv2.absdiff(grey, cv2.convertScaleAbs(self._background))
        _, binary = cv2.threshold(diff, self.cfg.threshold, 255, cv2.THRESH_BINARY)
        if self._mask is not None:
            binary = cv2.bitwise_and(binary, self._mask)
            area = max(1, int(np.count_nonzero(self._mask)))
        else:
            area = sw * sh
        changed = cv2.countNonZero(binary) / area
        if changed > self.cfg.max_changed:
            self._background = grey.astype(np.float32)
            return MotionResult([], changed, recalibrated=True)

        # Moving pixels learn slowly so a bird that keeps moving is not absorbed, while
        # something that arrives and stays still fades into the background.
        still = cv2.bitwise_not(binary)
        cv2.accumulateWeighted(grey, self._background, self.cfg.alpha, mask=still)
        cv2.accumulateWeighted(grey, self._background, self.cfg.alpha / 10, mask=binary)

        if self.cfg.dilate:
            binary = cv2.dilate(binary, None, iterations=self.cfg.dilate)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        min_px = self.cfg.min_area * sw * sh
        boxes = [cv2.boundingRect(c) for c in contours if cv2.contourArea(c) >= min_px]
        h, w = frame_bgr.shape[:2]
        return MotionResult(scale_boxes(boxes, w / sw, h / sh), changed)
