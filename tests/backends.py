"""A pure-numpy stand-in for the inference seam, for tests of what sits around an engine
(the worker, the status snapshot), never of an engine itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import numpy as np

from camtrap.inference.backend import Prediction, TopK, check_batch


class NumpyBackend:
    """A test double of the seam, not an engine: the worker must need nothing else.

    Class j's score is how close an image's mean is to 32 * j, so each crop's answer is
    known. Results wait until `max_in_flight` batches are out or the worker collects them,
    and it counts how many were out at once.
    """

    input_size = 16
    max_batch = 2
    max_in_flight = 3
    embedding_size = None

    def __init__(self, name: str = "class") -> None:
        self.labels = [f"{name} {j}" for j in range(8)]
        self.out = 0
        self.most_out = 0
        self.submitted = 0
        self.closed = False

    def submit(self, images: np.ndarray) -> _NumpyPending:
        check_batch(images, self.input_size, self.max_batch)
        if images[:, 0, 0, 0].max() == 255:
            raise ValueError("a batch the engine refuses")
        self.out += 1
        self.submitted += 1
        self.most_out = max(self.most_out, self.out)
        mean = images.reshape(len(images), -1).mean(axis=1)
        scores = -np.abs(mean[:, None] - 32.0 * np.arange(8)[None, :])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :2]
        probs = np.exp(np.take_along_axis(scores, order, axis=1)).astype(np.float32)
        return _NumpyPending(self, TopK(probs, order.astype(np.int64)))

    def warm_up(self, batch_sizes: Iterable[int]) -> float:
        return 0.0

    def describe(self) -> str:
        return "numpy test double"

    def close(self) -> None:
        self.closed = True


class _NumpyPending:
    def __init__(self, backend: NumpyBackend, top: TopK) -> None:
        self.backend, self.top = backend, top

    def result(self) -> TopK:
        self.backend.out -= 1
        return self.top


class Collector:
    """An inference worker's sink that keeps what it is given, for the worker tests."""

    def __init__(self) -> None:
        self.predictions: list[Prediction] = []
        self.lock = threading.Lock()

    def __call__(self, predictions: list[Prediction]) -> None:
        with self.lock:
            self.predictions.extend(predictions)

    def wait_for(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.predictions) < n and time.monotonic() < deadline:
            time.sleep(0.01)
