"""The bounded, fair hand-over of crops from every camera thread to the inference thread."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from camtrap.motion.regions import Crop

log = logging.getLogger(__name__)
class CropQueue:
    """Bounded, fair hand-over from camera threads to the inference thread.

    Per-camera FIFOs, taken round-robin, so one busy camera can't starve the others. When
    full, `put` drops the oldest crop of the camera with the most queued crops (stale
    crops of a burst are worth least) and counts it; it never blocks a camera thread.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self.drops: dict[str, int] = {}
        self._fifos: dict[str, deque[tuple[float, Crop]]] = {}
        self._size = 0
        self._next = 0  # round-robin position in the camera order
        self._closed = False
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def drop_counts(self) -> dict[str, int]:
        """A copy of `drops` taken under the lock (safe while cameras keep putting)."""
        with self._cond:
            return dict(self.drops)

    def put(self, crop: Crop) -> bool:
        """Queue `crop`; False once the queue is closed (the crop is counted as dropped)."""
        with self._cond:
            if self._closed:
                self.drops[crop.camera] = self.drops.get(crop.camera, 0) + 1
                return False
            if self._size >= self.maxsize:
                self._drop_one(crop.camera)
            self._fifos.setdefault(crop.camera, deque()).append((time.monotonic(), crop))
            self._size += 1
            self._cond.notify_all()
            return True

    def _drop_one(self, incoming: str) -> None:
        # Ties go to the incoming crop's own camera: it pays for its own burst.
        victim = max(self._fifos, key=lambda cam: (len(self._fifos[cam]), cam == incoming))
        self._fifos[victim].popleft()
        self._size -= 1
        self.drops[victim] = self.drops.get(victim, 0) + 1

    def get_batch(self, max_size: int, max_wait_s: float, timeout_s: float) -> list[Crop]:
        """Up to `max_size` crops: wait up to `timeout_s` for one, then fill the batch.

        A crop waits for company at most `max_wait_s` from when it was queued, so batching
        adds bounded latency and a backlog is served at once. [] on timeout or when closed
        and empty; once closed, whatever is queued comes back without waiting.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._size > 0 or self._closed, timeout_s):
                return []
            if self._size == 0:
                return []
            deadline = self._oldest() + max_wait_s
            while self._size < max_size and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._take(max_size)

    def oldest_crop_ts(self) -> float | None:
        """Frame clock (`Crop.clock`) of the oldest queued crop: visits must not end
        before it is seen."""
        with self._cond:
            return min((f[0][1].clock for f in self._fifos.values() if f), default=None)

    def _oldest(self) -> float:
        return min(fifo[0][0] for fifo in self._fifos.values() if fifo)

    def _take(self, max_size: int) -> list[Crop]:
        cameras = list(self._fifos)
        batch: list[Crop] = []
        i = self._next
        while len(batch) < max_size and self._size > 0:
            fifo = self._fifos[cameras[i % len(cameras)]]
            i += 1
            if fifo:
                batch.append(fifo.popleft()[1])
                self._size -= 1
        self._next = i % len(cameras)
        return batch

    def resize(self, maxsize: int) -> None:
        """A new bound (a reload); crops over it are dropped the way `put` drops them."""
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        with self._cond:
            self.maxsize = maxsize
            while self._size > maxsize:
                self._drop_one("")

    def close(self) -> None:
        """Refuse new crops and wake every waiter; queued crops can still be taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


