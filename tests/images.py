"""Varied, photo-like test images (the classifier's inputs in tests; never flat fills)."""

from __future__ import annotations

import cv2
import numpy as np


def textured_images(n: int, size: int = 240, seed: int = 0) -> np.ndarray:
    """`n` varied natural-looking RGB uint8 images (N, size, size, 3), never constant.

    Mixes smoothed noise at several scales, colour gradients and drawn shapes, so the
    model's input statistics look like photos rather than flat fills.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        out[i] = _one_image(rng, size, i % 4)
    return out


def _one_image(rng: np.random.Generator, size: int, kind: int) -> np.ndarray:
    img = _smooth_noise(rng, size)
    if kind in (1, 3):
        img = 0.5 * img + 0.5 * _gradient(rng, size)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if kind >= 2:
        _draw_shapes(rng, img)
    return img


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    cells = int(rng.choice([4, 8, 16, 32, 64]))
    small = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, rng.uniform(2, 25), (size, size, 3)).astype(np.float32)
    return img + cv2.GaussianBlur(fine, (0, 0), rng.uniform(0.5, 2.0))


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = ramp[None, :, None] if rng.random() < 0.5 else ramp[:, None, None]
    return np.broadcast_to(a + (b - a) * t, (size, size, 3))


def _draw_shapes(rng: np.random.Generator, img: np.ndarray) -> None:
    size = img.shape[0]
    for _ in range(int(rng.integers(1, 5))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        centre = tuple(int(c) for c in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            axes = tuple(int(a) for a in rng.integers(8, size // 3, 2))
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(img, centre, axes, angle, 0, 360, colour, -1, cv2.LINE_AA)
        else:
            end = tuple(int(c) for c in rng.integers(0, size, 2))
            cv2.line(img, centre, end, colour, int(rng.integers(2, 12)), cv2.LINE_AA)
