"""The torch engine: one batched forward, preprocessing on the device in one go rather than
image by image through PIL (birder's reference path)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from camtrap.config.models import ModelConfig
from camtrap.inference.backend import Prediction, bucket_sizes
from camtrap.inference.checkpoint import resolve_checkpoint
from camtrap.inference.network import (
    LoadedModel,
    apply_threads,
    load_network,
    select_device,
    select_dtype,
)
from camtrap.motion.regions import Crop

log = logging.getLogger(__name__)
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

