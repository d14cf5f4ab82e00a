"""The one inference thread: batches from the crop queue, through the backend, to the sink."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from camtrap.config.models import BatchingConfig
from camtrap.inference.backend import Backend, Pending, Prediction, to_predictions
from camtrap.inference.queue import CropQueue
from camtrap.logs import name_os_thread
from camtrap.motion.regions import Crop
from camtrap.status import InferenceSnapshot

log = logging.getLogger(__name__)


@dataclass
class _Launched:
    crops: list[Crop]
    pending: Pending
    started: float  # perf_counter


class InferenceWorker(threading.Thread):
    """The one thread that runs the model: queue -> batch -> backend -> sink.

    Up to the backend's `max_in_flight` batches are submitted before the oldest one's result
    is collected (results go to the sink in submission order): on CUDA the next batch is
    staged while the device runs the current one; on a CPU each batch is finished before the
    next is taken. Errors in classifying or in the sink are logged and counted; the thread
    keeps going.
    `last_progress` moves on every loop turn, idle or busy, so a watchdog can tell a stuck
    forward from a quiet feeder.
    """

    IDLE_TICK_S = 0.25

    def __init__(
        self,
        backend: Backend,
        queue: CropQueue,
        batching: BatchingConfig,
        sink: Callable[[list[Prediction]], None],
    ) -> None:
        super().__init__(name="inference", daemon=True)
        self.backend = backend
        self.queue = queue
        self.batching = batching
        self.sink = sink
        self.batches = 0
        self.crops_classified = 0
        self.errors = 0
        self.failed_crops = 0
        self.batch_sizes: dict[int, int] = {}
        self.last_latency_s: float | None = None
        self.latencies: deque[float] = deque(maxlen=256)
        self.last_progress = time.monotonic()
        self._stopping = threading.Event()
        self._drain_deadline = math.inf
        self._stats_lock = threading.Lock()
        self._in_flight_ts: tuple[float, ...] = ()  # oldest frame time of each batch out
        self._next: tuple[Backend, BatchingConfig] | None = None  # from `use`, taken per turn

    def pending_since(self) -> float | None:
        """Frame clock (`Crop.clock`) of the oldest crop not yet handed to the sink (queued
        or in a batch)."""
        queued = self.queue.oldest_crop_ts()
        times = [t for t in (queued, *self._in_flight_ts) if t is not None]
        return min(times) if times else None

    def use(self, backend: Backend, batching: BatchingConfig) -> None:
        """Run `backend` with `batching` from the next batch taken on (a reload), without
        stopping the thread or the queue.

        Batches already out finish on the backend that took them; a replaced backend is
        closed after its last one, since nothing else knows when that is.
        """
        self._next = (backend, batching)

    def run(self) -> None:
        name_os_thread()
        flight: deque[_Launched] = deque()
        while True:
            self.last_progress = time.monotonic()
            if self._stopping.is_set() and (
                len(self.queue) == 0 or time.monotonic() >= self._drain_deadline
            ):
                break
            # With batches out, take only what is queued now: the oldest one's result is due.
            max_wait_s = self.batching.max_wait_ms / 1000.0
            wait, tick = (0.0, 0.0) if flight else (max_wait_s, self.IDLE_TICK_S)
            batch = self.queue.get_batch(self._max_size(), wait, tick)
            if self._next is not None:  # a reload: what is out finishes where it started
                while flight:
                    self._finish(flight.popleft())
                self._switch()
            launched = False
            step = self._max_size()
            for start in range(0, len(batch), step):  # one slice unless a reload shrank it
                out = self._launch(batch[start : start + step])
                if out is not None:
                    flight.append(out)
                    launched = True
                while len(flight) >= max(1, self.backend.max_in_flight):
                    self._finish(flight.popleft())
            if flight and not launched:
                self._finish(flight.popleft())
        while flight:
            self._finish(flight.popleft())
        self._switch()
        left = len(self.queue)
        if left:
            log.warning("inference stopped with %d crops left unclassified", left)

    def _max_size(self) -> int:
        return min(self.batching.max_size, self.backend.max_batch)

    def _switch(self) -> None:
        change, self._next = self._next, None
        if change is None:
            return
        old = self.backend
        self.backend, self.batching = change
        if self.backend is not old:
            try:
                old.close()
            except Exception:
                log.exception("closing the replaced backend %s failed", old.describe())

    def _launch(self, batch: list[Crop]) -> _Launched | None:
        self._in_flight_ts = (*self._in_flight_ts, min(c.clock for c in batch))
        start = time.perf_counter()
        try:
            pending = self.backend.submit(np.stack([c.image for c in batch]))
        except Exception:
            self._in_flight_ts = self._in_flight_ts[:-1]
            self._failed(batch)
            return None
        return _Launched(batch, pending, start)

    def _finish(self, out: _Launched) -> None:
        """Wait for the oldest batch out and hand its predictions to the sink."""
        try:
            try:
                predictions = to_predictions(self.backend.labels, out.crops,
                                             out.pending.result())
            except Exception:
                self._failed(out.crops)
                return
            self._record(len(out.crops), time.perf_counter() - out.started)
            try:
                self.sink(predictions)
            except Exception:
                log.exception("prediction sink failed")
                with self._stats_lock:
                    self.errors += 1
        finally:
            self._in_flight_ts = self._in_flight_ts[1:]

    def _failed(self, batch: list[Crop]) -> None:
        log.exception("classifying a batch of %d crops failed", len(batch))
        with self._stats_lock:
            self.errors += 1
            self.failed_crops += len(batch)

    def _record(self, n: int, latency_s: float) -> None:
        with self._stats_lock:
            self.batches += 1
            self.crops_classified += n
            self.batch_sizes[n] = self.batch_sizes.get(n, 0) + 1
            self.last_latency_s = latency_s
            self.latencies.append(latency_s)

    def latency_percentiles(self) -> tuple[float | None, float | None]:
        """(p50, p95) of recent batch latencies in seconds; None before the first batch."""
        with self._stats_lock:
            recent = list(self.latencies)
        if not recent:
            return None, None
        p50, p95 = np.percentile(recent, [50, 95])
        return float(p50), float(p95)

    def snapshot(self, stall_limit_s: float) -> InferenceSnapshot:
        """A consistent view for health, metrics, MQTT stats and STATUS=."""
        p50, p95 = self.latency_percentiles()
        idle = time.monotonic() - self.last_progress
        with self._stats_lock:
            return InferenceSnapshot(
                backend=self.backend.describe(),
                alive=self.is_alive() and idle < stall_limit_s,
                idle_s=idle,
                batches=self.batches,
                crops=self.crops_classified,
                errors=self.errors,
                failed_crops=self.failed_crops,
                queued=len(self.queue),
                drops=self.queue.drop_counts(),
                latency_p50_s=p50,
                latency_p95_s=p95,
                last_latency_s=self.last_latency_s,
            )

    def stop(self, drain_timeout_s: float = 5.0) -> bool:
        """Close the queue, classify what is queued for up to `drain_timeout_s`, then stop.

        A batch in flight at the deadline is finished (a forward can't be interrupted), so
        the wait allows for one more. True if the thread has ended.
        """
        self._drain_deadline = time.monotonic() + drain_timeout_s
        self._stopping.set()
        self.queue.close()
        if self.ident is None:  # never started
            return True
        _, p95 = self.latency_percentiles()
        self.join(drain_timeout_s + 1.0 + 2 * (p95 or 0.0))
        return not self.is_alive()
