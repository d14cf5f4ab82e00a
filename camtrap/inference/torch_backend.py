"""The torch engine, the first `Backend`: one batched forward, preprocessing on the device in
one go rather than image by image through PIL (birder's reference path)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from camtrap.config.models import ModelConfig
from camtrap.inference.backend import TopK, bucket_sizes, check_batch, warm_up_sizes
from camtrap.inference.checkpoint import resolve_checkpoint
from camtrap.inference.network import (
    LoadedModel,
    apply_threads,
    load_network,
    select_device,
    select_dtype,
)

log = logging.getLogger(__name__)

PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class PendingBatch:
    """A batch on its way through the model; `result()` waits for it.

    On CUDA the upload, forward and copy back are queued on the device, so the caller can
    stage the next batch while this one runs. On a CPU the work is already done.
    """

    def __init__(self, out: torch.Tensor, top_k: int, done: torch.cuda.Event | None = None
                 ) -> None:
        self._out = out  # [n, k probs | k indices | embedding] float32 on the host
        self._top_k = top_k
        self._done = done

    def result(self) -> TopK:
        """The batch's arrays, owned by the caller (the pinned buffer is not reused)."""
        if self._done is not None:
            self._done.synchronize()
        out = self._out.numpy()
        k = self._top_k
        return TopK(
            probs=out[:, :k].copy(),
            indices=out[:, k : 2 * k].astype(np.int64),
            embedding=out[:, 2 * k :].copy() if out.shape[1] > 2 * k else None,
        )


class TorchBackend:
    """The network in torch with batched on-device preprocessing; thread-safe, one launch at
    a time. Exact against birder in fp32; bf16/fp16 by autocast where the config asks."""

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
        self._closed = False
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self._forward_impl
        if cfg.compile:
            self._forward = torch.compile(self._forward_impl, dynamic=False)

    @property
    def embedding_size(self) -> int | None:
        if not self.with_embedding:
            return None
        return int(getattr(self.model.net, "embedding_size", 0))

    @property
    def max_batch(self) -> int:
        return self.buckets[-1]

    @property
    def max_in_flight(self) -> int:
        """2 on CUDA, where `submit` returns before the forward is done: the next batch is
        staged while the device runs this one. 1 on a CPU, where `submit` does the work."""
        return 2 if self._cuda else 1

    @property
    def precision(self) -> str:
        return PRECISION_NAMES[self.dtype]

    def describe(self) -> str:
        compiled = " compiled" if self.cfg.compile else ""
        return f"torch {self.device} {self.precision} patch {self.model.patch_size}{compiled}"

    def submit(self, images: np.ndarray) -> PendingBatch:
        """Start one forward for up to `max_batch` uint8 NHWC images; see `PendingBatch`."""
        check_batch(images, self.input_size, self.max_batch)
        with self._lock, torch.inference_mode():
            if self._closed:
                raise RuntimeError(f"{self.describe()}: closed")
            x = self._upload(images)
            out = self._forward(x)[: len(images)]
            if not self._cuda:
                return PendingBatch(out, self.top_k)
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            return PendingBatch(host, self.top_k, done)

    def warm_up(self, batch_sizes: Iterable[int] = (1,)) -> float:
        """Run each batch size once (as the bucket it pads to) so the first real crops don't
        pay for graph capture, cuDNN plans or compiling; seconds."""
        return warm_up_sizes(self, (self._bucket(min(n, self.max_batch))
                                    for n in batch_sizes if n > 0))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._pinned.clear()

    # -- internals ---------------------------------------------------------------------

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

