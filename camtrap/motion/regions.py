"""Motion boxes -> square regions -> model-sized crops.

A square region a bit larger than the moving object keeps the whole bird and some context,
and does not distort it when resized to the model's square input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from camtrap.config.models import RegionsConfig

Box = tuple[int, int, int, int]  # x, y, w, h in pixels


@dataclass(frozen=True, eq=False)
class Crop:
    camera: str
    ts: float
    frame_seq: int
    box: Box  # the square region, in full-resolution frame pixels
    frame_size: tuple[int, int]  # width, height
    image: np.ndarray  # (S, S, 3) uint8 RGB, S = model input size
    context_jpeg: bytes | None = field(default=None, repr=False)  # the frame, downscaled
    mono: float | None = None  # the frame's monotonic time; None: `ts` is one (files, tests)
    track_id: int | None = None  # the bird it shows (per camera); None: tracks are off

    @property
    def clock(self) -> float:
        """The frame's time for durations (see `Frame.clock`); `ts` stays the stamp."""
        return self.ts if self.mono is None else self.mono


def scale_boxes(
    boxes: list[Box], sx: float, sy: float, size: tuple[int, int] | None = None
) -> list[Box]:
    """Map boxes from one resolution (a detect stream) to another (the main stream): the
    result covers every pixel the box touched, clipped to `size` (width, height) if given."""
    out: list[Box] = []
    for x, y, w, h in boxes:
        x0, y0 = math.floor(x * sx), math.floor(y * sy)
        x1, y1 = math.ceil((x + w) * sx), math.ceil((y + h) * sy)
        if size is not None:
            x0, y0 = max(0, x0), max(0, y0)
            x1, y1 = min(size[0], x1), min(size[1], y1)
        out.append((x0, y0, max(1, x1 - x0), max(1, y1 - y0)))
    return out


def contains(outer: Box, inner: Box) -> bool:
    return (
        outer[0] <= inner[0]
        and outer[1] <= inner[1]
        and inner[0] + inner[2] <= outer[0] + outer[2]
        and inner[1] + inner[3] <= outer[1] + outer[3]
    )


def _gap(a: Box, b: Box) -> float:
    dx = max(b[0] - (a[0] + a[2]), a[0] - (b[0] + b[2]), 0)
    dy = max(b[1] - (a[1] + a[3]), a[1] - (b[1] + b[3]), 0)
    return max(dx, dy)


def _union(a: Box, b: Box) -> Box:
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return (x0, y0, x1 - x0, y1 - y0)


def cluster_boxes(boxes: list[Box], max_gap: float) -> list[Box]:
    """Merge boxes closer than `max_gap` pixels (a bird's wing and body move as two blobs)."""
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        out: list[Box] = []
        for box in merged:
            for i, other in enumerate(out):
                if _gap(box, other) <= max_gap:
                    out[i] = _union(box, other)
                    changed = True
                    break
            else:
                out.append(box)
        merged = out
    return merged


def square_region(box: Box, frame_w: int, frame_h: int, scale: float, min_size: int) -> Box:
    """A square around `box`, `scale` times its longer side, shifted to stay in the frame."""
    x, y, w, h = box
    side = max(round(max(w, h) * scale), min_size)
    side = max(1, min(side, frame_w, frame_h))
    cx, cy = x + w / 2, y + h / 2
    x0 = round(cx - side / 2)
    y0 = round(cy - side / 2)
    x0 = min(max(x0, 0), frame_w - side)
    y0 = min(max(y0, 0), frame_h - side)
    return (x0, y0, side, side)


def plan_regions(boxes: list[Box], frame_w: int, frame_h: int, cfg: RegionsConfig) -> list[Box]:
    """Square regions for one frame, largest object first, at most `max_per_frame`.

    An object that already lies inside a chosen region of about its own scale gets no region
    of its own: the same bird twice would only cost the classifier time.
    """
    if not boxes:
        return []
    clusters = cluster_boxes(boxes, cfg.merge_gap * max(frame_w, frame_h))
    clusters.sort(key=lambda b: b[2] * b[3], reverse=True)
    regions: list[Box] = []
    for box in clusters:
        region = square_region(box, frame_w, frame_h, cfg.scale, cfg.min_size)
        if any(contains(r, box) and r[2] <= 2 * region[2] for r in regions):
            continue
        regions.append(region)
        if len(regions) == cfg.max_per_frame:
            break
    return regions


def cut_crop(frame_bgr: np.ndarray, region: Box, size: int) -> np.ndarray:
    """Cut `region` from a BGR frame and return it as a `size`x`size` RGB uint8 image."""
    x, y, w, h = region
    patch = frame_bgr[y : y + h, x : x + w]
    if w != size or h != size:
        # Area averaging when shrinking (no aliasing), cubic when enlarging (sharper).
        interp = cv2.INTER_AREA if w * h > size * size else cv2.INTER_CUBIC
        patch = cv2.resize(patch, (size, size), interpolation=interp)
    if patch.ndim == 2:
        return cv2.cvtColor(patch, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(patch, cv2.COLOR_BGR2RGB)


CONTEXT_WIDTH = 480  # px: enough to see where on the feeder a bird was, a few tens of KB


def context_jpeg(frame_bgr: np.ndarray, width: int = CONTEXT_WIDTH, quality: int = 80) -> bytes:
    """The whole frame, downscaled, as JPEG: kept with a visit to show where its crop was."""
    h, w = frame_bgr.shape[:2]
    if w > width:
        frame_bgr = cv2.resize(frame_bgr, (width, max(1, round(h * width / w))),
                               interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return jpeg.tobytes() if ok else b""
