"""Species classification: one batched forward for crops from every camera.

Camera threads `put` crops into one bounded `CropQueue`; a single `InferenceWorker` thread
takes batches (up to `batching.max_size`, waiting at most `max_wait_ms` for company) and
runs them through `Classifier`, whose preprocessing runs on the device in one go rather
than image by image through PIL (birder's reference path).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from camtrap.config import BatchingConfig, ModelConfig
from camtrap.logs import name_os_thread
from camtrap.model import (
    LoadedModel,
    apply_threads,
    load_network,
    resolve_checkpoint,
    select_device,
    select_dtype,
)
from camtrap.regions import Crop

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


class PendingBatch:
    """A batch on its way through the model; `result()` waits for it.

    On CUDA the upload, forward and copy back are queued on the device, so the caller can
    stage the next batch while this one runs. On a CPU the work is already done.
    """

    def __init__(self, out: torch.Tensor, done: torch.cuda.Event | None = None) -> None:
        self._out = out  # [n, out width] float32 on the host (pinned while being copied)
        self._done = done

    def result(self) -> np.ndarray:
        """[n, k probs | k indices | embedding] float32, owned by the caller."""
        if self._done is not None:
            self._done.synchronize()
        return self._out.numpy().copy()


class Classifier:
    """The model plus batched on-device preprocessing; thread-safe, one launch at a time."""

    def __init__(self, cfg: ModelConfig, path: Path | None = None, *, max_batch: int = 64) -> None:
        apply_threads(cfg)
        self.cfg = cfg
        self.device = select_device(cfg)
        self.dtype = select_dtype(cfg, self.device)
        self.model: LoadedModel = load_network(
            resolve_checkpoint(cfg) if path is None else path, cfg, self.device
        )
        self.labels = self.model.labels
        self.input_size = self.model.input_size
        self.top_k = min(cfg.top_k, len(self.labels))
        self.with_embedding = cfg.embedding
        self.buckets = bucket_sizes(max_batch)
        # Padding only pays where a fixed shape is reused (compiled graphs, cuDNN plans);
        # on an eager CPU it would be pure extra work.
        self._cuda = self.device.type == "cuda"
        if self._cuda and self.dtype == torch.float32:
            # fp32 means fp32: cuDNN runs fp32 convolutions as TF32 by default, which moved
            # probabilities by 4e-4 against birder on an H200. Process-wide, like the model.
            torch.backends.cudnn.allow_tf32 = False
        self.pad_batches = self._cuda or cfg.compile
        self._mean = torch.tensor(self.model.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.model.std, device=self.device).view(1, 3, 1, 1)
        # Two pinned staging buffers per batch size, each with the event of its last upload:
        # one batch can be staged while the previous one is still being copied up.
        self._pinned: dict[int, list[tuple[torch.Tensor, torch.cuda.Event | None]]] = {}
        self._lock = threading.Lock()
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self._forward_impl
        if cfg.compile:
            self._forward = torch.compile(self._forward_impl, dynamic=False)

    @property
    def embedding_size(self) -> int:
        return int(getattr(self.model.net, "embedding_size", 0))

    @property
    def max_batch(self) -> int:
        return self.buckets[-1]

    @property
    def asynchronous(self) -> bool:
        """True where `submit` returns before the forward is done (CUDA)."""
        return self._cuda

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """uint8 NHWC RGB -> (top-k probs float32 [N,k], indices int64 [N,k], emb [N,D]|None)."""
        self._check(images)
        step = self.max_batch
        parts: list[np.ndarray] = []
        previous: PendingBatch | None = None
        for i in range(0, len(images), step):  # two chunks in flight: staging overlaps forward
            pending = self.submit(images[i : i + step])
            if previous is not None:
                parts.append(previous.result())
            previous = pending
        if previous is not None:
            parts.append(previous.result())
        return self.split(np.concatenate(parts) if parts else np.zeros((0, self._out_width()),
                                                                         np.float32))

    def split(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A `PendingBatch.result()` -> (probs, indices, embedding), as `predict` returns."""
        k = self.top_k
        probs = np.ascontiguousarray(out[:, :k])
        indices = out[:, k : 2 * k].astype(np.int64)
        embedding = np.ascontiguousarray(out[:, 2 * k :]) if self.with_embedding else None
        return probs, indices, embedding

    def submit(self, images: np.ndarray) -> PendingBatch:
        """Start one forward for up to `max_batch` uint8 NHWC images; see `PendingBatch`."""
        self._check(images)
        if len(images) > self.max_batch:
            raise ValueError(f"{len(images)} images in one batch, max_batch is {self.max_batch}")
        with self._lock, torch.inference_mode():
            x = self._upload(images)
            out = self._forward(x)[: len(images)]
            if not self._cuda:
                return PendingBatch(out)
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            return PendingBatch(host, done)

    def classify(self, crops: list[Crop]) -> list[Prediction]:
        """One forward for all `crops`; predictions in the same order."""
        if not crops:
            return []
        return self.predictions(crops, self.predict(np.stack([c.image for c in crops])))

    def predictions(self, crops: list[Crop],
                    predicted: tuple[np.ndarray, np.ndarray, np.ndarray | None]
                    ) -> list[Prediction]:
        """`predict`'s arrays for `crops` -> one Prediction per crop, labels attached."""
        probs, indices, embedding = predicted
        return [
            Prediction(
                crop=crop,
                top_k=tuple(
                    (self.labels[j], float(p)) for j, p in zip(indices[n], probs[n], strict=True)
                ),
                embedding=None if embedding is None else embedding[n],
            )
            for n, crop in enumerate(crops)
        ]

    def warm_up(self, batch_sizes: Iterable[int] = (1,)) -> float:
        """Run each batch size once so the first real crops don't pay for setup; seconds."""
        start = time.perf_counter()
        sizes = {self._bucket(min(n, self.buckets[-1])) for n in batch_sizes if n > 0}
        for n in sorted(sizes):
            self.predict(np.zeros((n, self.input_size, self.input_size, 3), np.uint8))
        return time.perf_counter() - start

    # -- internals ---------------------------------------------------------------------

    def _check(self, images: np.ndarray) -> None:
        s = self.input_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise ValueError(
                f"expected uint8 images of shape (N, {s}, {s}, 3), got {images.dtype} "
                f"{images.shape}"
            )

    def _out_width(self) -> int:
        return 2 * self.top_k + (self.embedding_size if self.with_embedding else 0)

    def _bucket(self, n: int) -> int:
        if not self.pad_batches:
            return n
        return next(b for b in self.buckets if b >= n)

    def _upload(self, images: np.ndarray) -> torch.Tensor:
        """`images` as a uint8 tensor of the bucket's size on the device."""
        n, size = len(images), self._bucket(len(images))
        src = torch.from_numpy(np.ascontiguousarray(images))
        if self._cuda:
            ring = self._pinned.setdefault(size, [])
            if len(ring) < 2:
                shape = (size, *images.shape[1:])
                ring.append((torch.zeros(shape, dtype=torch.uint8, pin_memory=True), None))
            buf, uploaded = ring.pop(0)
            if uploaded is not None:
                uploaded.synchronize()  # its last upload must be done before it is refilled
            buf[:n].copy_(src)  # rows past n: stale padding, never read back
            x = buf.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            ring.append((buf, event))
            return x
        if size == n:
            return src
        buf = torch.zeros((size, *images.shape[1:]), dtype=torch.uint8)
        buf[:n].copy_(src)
        return buf

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC on the device -> [B, k probs | k indices | embedding] float32."""
        # Same arithmetic, in the same order, as torchvision's ToDtype(scale) + Normalize.
        x = x.permute(0, 3, 1, 2).to(torch.float32).contiguous()
        x = x.mul_(1.0 / 255.0).sub_(self._mean).div_(self._std)
        net = self.model.net
        with torch.autocast(self.device.type, dtype=self.dtype,
                            enabled=self.dtype != torch.float32):
            if self.with_embedding:
                embedding = net.embedding(x)
                logits = net.classify(embedding)
            else:
                logits = net(x)
        probs, indices = F.softmax(logits.float(), dim=1).topk(self.top_k, dim=1)
        parts = [probs, indices.to(torch.float32)]  # exact: indices < 2**24
        if self.with_embedding:
            parts.append(embedding.float())
        return torch.cat(parts, dim=1)


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
        """Queue `crop`; False (and nothing queued) once the queue is closed."""
        with self._cond:
            if self._closed:
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
        """Frame time of the oldest queued crop: visits must not end before it is seen."""
        with self._cond:
            return min((f[0][1].ts for f in self._fifos.values() if f), default=None)

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

    def close(self) -> None:
        """Refuse new crops and wake every waiter; queued crops can still be taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class _Launched:
    crops: list[Crop]
    pending: PendingBatch
    started: float  # perf_counter


class InferenceWorker(threading.Thread):
    """The one thread that runs the model: queue -> batch -> classify -> sink.

    On CUDA the next batch is taken and staged while the device runs the current one (two in
    flight at most); on a CPU each batch is finished before the next is taken. Errors in
    classifying or in the sink are logged and counted; the thread keeps going.
    `last_progress` moves on every loop turn, idle or busy, so a watchdog can tell a stuck
    forward from a quiet feeder.
    """

    IDLE_TICK_S = 0.25

    def __init__(
        self,
        classifier: Classifier,
        queue: CropQueue,
        batching: BatchingConfig,
        sink: Callable[[list[Prediction]], None],
    ) -> None:
        super().__init__(name="inference", daemon=True)
        self.classifier = classifier
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

    def pending_since(self) -> float | None:
        """Frame time of the oldest crop not yet handed to the sink (queued or in a batch)."""
        queued = self.queue.oldest_crop_ts()
        times = [t for t in (queued, *self._in_flight_ts) if t is not None]
        return min(times) if times else None

    def run(self) -> None:
        name_os_thread()
        max_wait_s = self.batching.max_wait_ms / 1000.0
        max_size = min(self.batching.max_size, self.classifier.max_batch)
        out: _Launched | None = None
        while True:
            self.last_progress = time.monotonic()
            if self._stopping.is_set() and (
                len(self.queue) == 0 or time.monotonic() >= self._drain_deadline
            ):
                break
            # With a batch on the device, take only what is queued now: its result is due.
            wait, tick = (0.0, 0.0) if out else (max_wait_s, self.IDLE_TICK_S)
            batch = self.queue.get_batch(max_size, wait, tick)
            launched = self._launch(batch) if batch else None
            if out is not None:
                self._finish(out)
            out = launched
            if out is not None and not self.classifier.asynchronous:
                self._finish(out)
                out = None
        if out is not None:
            self._finish(out)
        left = len(self.queue)
        if left:
            log.warning("inference stopped with %d crops left unclassified", left)

    def _launch(self, batch: list[Crop]) -> _Launched | None:
        self._in_flight_ts = (*self._in_flight_ts, min(c.ts for c in batch))
        start = time.perf_counter()
        try:
            pending = self.classifier.submit(np.stack([c.image for c in batch]))
        except Exception:
            self._in_flight_ts = self._in_flight_ts[:-1]
            self._failed(batch)
            return None
        return _Launched(batch, pending, start)

    def _finish(self, out: _Launched) -> None:
        """Wait for the oldest batch out and hand its predictions to the sink."""
        try:
            try:
                predicted = self.classifier.split(out.pending.result())
            except Exception:
                self._failed(out.crops)
                return
            predictions = self.classifier.predictions(out.crops, predicted)
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

    def stats(self) -> dict[str, object]:
        """A consistent snapshot for logs, MQTT stats and health checks."""
        p50, p95 = self.latency_percentiles()
        with self._stats_lock:
            return {
                "batches": self.batches,
                "crops": self.crops_classified,
                "errors": self.errors,
                "failed_crops": self.failed_crops,
                "batch_sizes": dict(sorted(self.batch_sizes.items())),
                "last_latency_s": self.last_latency_s,
                "latency_p50_s": p50,
                "latency_p95_s": p95,
                "queued": len(self.queue),
                "drops": self.queue.drop_counts(),
                "idle_s": time.monotonic() - self.last_progress,
            }

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
