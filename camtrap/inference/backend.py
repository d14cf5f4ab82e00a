"""What the inference worker needs from an engine, whatever runs the network, and the code
every engine shares: checking a batch, chunking, and turning top-k arrays into predictions.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from camtrap.motion.regions import Crop


@dataclass(frozen=True, eq=False)
class Prediction:
    crop: Crop
    top_k: tuple[tuple[str, float], ...]  # (label, probability), best first
    embedding: np.ndarray | None = None  # (D,) float32, pre-head features


@dataclass(frozen=True, eq=False)
class TopK:
    """One batch's answer in the same form from every engine: a row per image, best first."""

    probs: np.ndarray  # [n, k] float32
    indices: np.ndarray  # [n, k] int64, class indices into the backend's labels
    embedding: np.ndarray | None = None  # [n, d] float32 pre-head features, if asked for

    def __len__(self) -> int:
        return len(self.probs)

    @staticmethod
    def concat(parts: list[TopK]) -> TopK:
        """The rows of `parts` in order; no parts is zero rows of zero columns."""
        if not parts:
            return TopK(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int64))
        embeddings = [p.embedding for p in parts]
        return TopK(
            np.concatenate([p.probs for p in parts]),
            np.concatenate([p.indices for p in parts]),
            None if any(e is None for e in embeddings) else np.concatenate(embeddings),
        )


class Pending(Protocol):
    """A submitted batch; `result()` blocks until it is done and raises if it failed."""

    def result(self) -> TopK: ...


@runtime_checkable
class Backend(Protocol):
    """An inference engine as the worker sees it: batches of crops in, top-k out.

    `submit` may return before the work is done; the worker keeps up to `max_in_flight`
    batches submitted and collects their results in submission order, so an engine that
    overlaps work (a GPU stream, a remote server) is kept busy without a thread per batch.
    """

    @property
    def labels(self) -> list[str]: ...  # by class index

    @property
    def input_size(self) -> int: ...  # crops are input_size x input_size

    @property
    def max_batch(self) -> int: ...  # most images one `submit` takes

    @property
    def max_in_flight(self) -> int: ...  # 1: each result is collected before the next submit

    @property
    def embedding_size(self) -> int | None: ...  # width of TopK.embedding, None without

    def submit(self, images: np.ndarray) -> Pending:
        """Start one batch of up to `max_batch` uint8 NHWC RGB images."""
        ...

    def warm_up(self, batch_sizes: Iterable[int]) -> float:
        """Run each batch size once so the first real crops don't pay for setup; seconds."""
        ...

    def describe(self) -> str:
        """One line for logs: engine, device, precision, patch size."""
        ...

    def close(self) -> None:
        """Release what the engine holds; later submits fail."""
        ...


def bucket_sizes(max_batch: int) -> list[int]:
    """Batch sizes compiled graphs and cuDNN plans are built for: 1, 2, 4, ..., max_batch."""
    sizes = [1 << i for i in range(max_batch.bit_length()) if (1 << i) < max_batch]
    return [*sizes, max_batch]


def check_batch(images: np.ndarray, input_size: int, max_batch: int) -> None:
    """Refuse what no engine can run, with the same message from each."""
    s = input_size
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (s, s, 3):
        raise ValueError(
            f"expected uint8 images of shape (N, {s}, {s}, 3), got {images.dtype} {images.shape}"
        )
    if len(images) > max_batch:
        raise ValueError(f"{len(images)} images in one batch, max_batch is {max_batch}")


def warm_up_sizes(backend: Backend, sizes: Iterable[int]) -> float:
    """Submit one blank batch of each size: the first inference of a shape pays for its
    kernels, plans or compilation, so the first bird does not. Seconds taken."""
    start = time.perf_counter()
    side = backend.input_size
    for n in sorted(set(sizes)):
        backend.submit(np.zeros((n, side, side, 3), np.uint8)).result()
    return time.perf_counter() - start


def predict(backend: Backend, images: np.ndarray) -> TopK:
    """Any number of images, in chunks of `max_batch` with up to `max_in_flight` out."""
    check_batch(images, backend.input_size, max(len(images), 1))
    parts: list[TopK] = []
    flight: deque[Pending] = deque()
    for start in range(0, len(images), backend.max_batch):
        flight.append(backend.submit(images[start : start + backend.max_batch]))
        if len(flight) >= max(1, backend.max_in_flight):
            parts.append(flight.popleft().result())
    parts += [pending.result() for pending in flight]
    return TopK.concat(parts)


def to_predictions(labels: list[str], crops: list[Crop], top: TopK) -> list[Prediction]:
    """One Prediction per crop, labels attached; the engine's rows are in `crops` order."""
    if len(top) != len(crops):
        raise ValueError(f"{len(top)} results for {len(crops)} crops")
    return [
        Prediction(
            crop=crop,
            top_k=tuple(
                (labels[j], float(p)) for j, p in zip(top.indices[n], top.probs[n], strict=True)
            ),
            embedding=None if top.embedding is None else top.embedding[n],
        )
        for n, crop in enumerate(crops)
    ]


def classify(backend: Backend, crops: list[Crop]) -> list[Prediction]:
    """Predictions for `crops`, in the same order."""
    if not crops:
        return []
    top = predict(backend, np.stack([c.image for c in crops]))
    return to_predictions(backend.labels, crops, top)
