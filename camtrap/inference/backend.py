"""What the inference worker needs from an engine, whatever runs the network."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from camtrap.motion.regions import Crop

log = logging.getLogger(__name__)
@dataclass(frozen=True, eq=False)
class Prediction:
    crop: Crop
    top_k: tuple[tuple[str, float], ...]  # (label, probability), best first
    embedding: np.ndarray | None = None  # (D,) float32, pre-head features


def bucket_sizes(max_batch: int) -> list[int]:
    """Batch sizes compiled graphs and cuDNN plans are built for: 1, 2, 4, ..., max_batch."""
    sizes = [1 << i for i in range(max_batch.bit_length()) if (1 << i) < max_batch]
    return [*sizes, max_batch]

