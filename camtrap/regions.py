"""Motion boxes -> square regions -> model-sized crops.

A square region a bit larger than the moving object keeps the whole bird and some context,
and does not distort it when resized to the model's square input.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from camtrap.config import RegionsConfig

Box = tuple[int, int, int, int]  # x, y, w, h in pixels


@dataclass(frozen=True, eq=False)
class Crop:
    camera: str
    ts: float
    frame_seq: int
    box: Box  # the square region, in full-resolution frame pixels
    frame_size: tuple[int, int]  # width, height
    image: np.ndarray  # (S, S, 3) uint8 RGB, S = model input size


def scale_boxes(boxes: list[Box], sx: float, sy: float) -> list[Box]:
    """Map boxes from one resolution (the motion image, a detect stream) to another."""
    return [
        (int(x * sx), int(y * sy), max(1, round(w * sx)), max(1, round(h * sy)))
        for x, y, w, h in boxes
    ]


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
    side = min(side, frame_w, frame_h)
    cx, cy = x + w / 2, y + h / 2
    x0 = round(cx - side / 2)
    y0 = round(cy - side / 2)
    x0 = min(max(x0, 0), frame_w - side)
    y0 = min(max(y0, 0), frame_h - side)
    return (x0, y0, side, side)


def plan_regions(boxes: list[Box], frame_w: int, frame_h: int, cfg: RegionsConfig) -> list[Box]:
    """Square regions for one frame, largest object first, at most `max_per_frame`."""
    if not boxes:
        return []
    clusters = cluster_boxes(boxes, cfg.merge_gap * max(frame_w, frame_h))
    clusters.sort(key=lambda b: b[2] * b[3], reverse=True)
    regions: list[Box] = []
    for box in clusters:
        region = square_region(box, frame_w, frame_h, cfg.scale, cfg.min_size)
        if region not in regions:
            regions.append(region)
        if len(regions) == cfg.max_per_frame:
            break
    return regions


def cut_crop(frame_bgr: np.ndarray, region: Box, size: int) -> np.ndarray:
    """Cut `region` from a BGR frame and return it as a `size`x`size` RGB uint8 image."""
    x, y, w, h = region
    patch = frame_bgr[y : y + h, x : x + w]
    interp = cv2.INTER_AREA if w > size else cv2.INTER_CUBIC
    if w != size or h != size:
        patch = cv2.resize(patch, (size, size), interpolation=interp)
    return cv2.cvtColor(patch, cv2.COLOR_BGR2RGB)
