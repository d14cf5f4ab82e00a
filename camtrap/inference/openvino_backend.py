"""The OpenVINO engine: the checkpoint converted once (camtrap.inference.convert), compiled for
the configured device and precision, batches split across OpenVINO's streams.

Precision is always set explicitly: OpenVINO silently runs bf16 on a CPU that has it unless
INFERENCE_PRECISION_HINT says f32, and fp32 must stay exact against birder.
With the throughput hint OpenVINO runs several single-thread streams. A batch is split into
one request per stream, so a single batch uses every core, and up to `max_in_flight`
batches overlap (the worker stacks the next batch while this one runs). Independent
streams also lose the least speed beside other busy processes (research/cpu_backends.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from camtrap.config.models import ModelConfig, OpenVINOBackendConfig
from camtrap.inference.backend import TopK, check_batch, warm_up_sizes
from camtrap.inference.checkpoint import ModelError
from camtrap.inference.convert import Converted, load_converted, require_package, top_k_rows

log = logging.getLogger(__name__)

IN_FLIGHT = 2  # batches the worker may have out: one running, one being stacked
PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def native_bf16(core: Any) -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (AVX512-BF16 or AMX)."""
    try:
        return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except RuntimeError:
        return False


def check_device(core: Any, device: str) -> None:
    """A device OpenVINO does not see here is a config error, not a compile traceback."""
    available = list(core.available_devices)
    if device == "AUTO" or device in available:
        return
    if device.startswith("GPU") and any(d.startswith("GPU") for d in available):
        return  # GPU and GPU.0 name the same first GPU; OpenVINO checks the index
    raise ModelError(f"model.backend.device {device}: OpenVINO has no such device here "
                     f"(it has {', '.join(available) or 'none'})")


def compile_config(options: OpenVINOBackendConfig, core: Any) -> dict[str, str]:
    """OpenVINO properties for the options: the hint, threads, and the precision, where
    fp32 is always f32, bf16 is bf16 where native (else f32 with a warning), auto is bf16
    where native, else f32. On a GPU, bf16 and auto leave the device's own choice (f16)."""
    config = {"PERFORMANCE_HINT": options.hint.upper()}
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = str(options.threads)
    if options.precision == "fp32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    elif options.device == "CPU":
        native = native_bf16(core)
        if options.precision == "bf16" and not native:
            log.warning("model.backend.precision bf16 is not native on this CPU: using fp32")
        config["INFERENCE_PRECISION_HINT"] = "bf16" if native else "f32"
    return config


class _Pending:
    """A batch's requests on their way; `result()` waits for each and frees it."""

    def __init__(self, backend: OpenVINOBackend, requests: list[Any]) -> None:
        self._backend = backend
        self._requests = requests
        self._top: TopK | None = None

    def result(self) -> TopK:
        if self._top is None:
            size = self._backend.converted.embedding_size
            probs = [np.zeros((0, len(self._backend.labels)), np.float32)]
            embeddings = [np.zeros((0, size), np.float32)]
            try:
                for request in self._requests:
                    request.wait()
                    probs.append(request.get_output_tensor(0).data.copy())
                    embeddings.append(request.get_output_tensor(1).data.copy())
            finally:
                self._backend._release(self._requests)
            self._top = self._backend._decode(np.concatenate(probs), np.concatenate(embeddings))
        return self._top


class OpenVINOBackend:
    """birder's network as an OpenVINO compiled model; thread-safe submits, `IN_FLIGHT`
    batches out. Exact against birder at fp32 (within 1e-4 of its probabilities)."""

    def __init__(self, cfg: ModelConfig, options: OpenVINOBackendConfig, *,
                 max_batch: int = 64) -> None:
        ov = require_package("openvino")
        self.cfg = cfg
        self.options = options
        self._core = ov.Core()
        check_device(self._core, options.device)
        self._config = compile_config(options, self._core)
        stored = "int8" if options.int8 else "fp32"
        self.converted: Converted
        self.converted, self._compiled = load_converted(cfg, "openvino", stored, self._compile)
        self.labels = self.converted.labels
        self.input_size = self.converted.key.input_size
        self.patch_size = self.converted.key.patch_size
        self.top_k = min(cfg.top_k, len(self.labels))
        self.with_embedding = cfg.embedding
        self._max_batch = max_batch
        self.streams = max(1, int(self._property("NUM_STREAMS", 1)))
        hint = self._property("INFERENCE_PRECISION_HINT", None)
        hint = getattr(hint, "to_string", lambda: str(hint))()
        self.precision = PRECISION_NAMES.get(hint, "device default")
        if options.int8:
            self.precision = f"int8+{self.precision}"
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        log.info("%s", self.describe())

    def _compile(self, converted: Converted) -> Any:
        return self._core.compile_model(str(converted.model_file), self.options.device,
                                        self._config)

    def _property(self, name: str, default: Any) -> Any:
        try:
            return self._compiled.get_property(name)
        except RuntimeError:  # not every device reports every property
            return default

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @property
    def max_in_flight(self) -> int:
        return IN_FLIGHT

    @property
    def embedding_size(self) -> int | None:
        return self.converted.embedding_size if self.with_embedding else None

    def describe(self) -> str:
        return (f"openvino {self.options.device} {self.precision} patch {self.patch_size} "
                f"({self.options.hint}, {self.streams} stream(s))")

    def submit(self, images: np.ndarray) -> _Pending:
        """Start one batch of up to `max_batch` uint8 NHWC images, one request per stream."""
        check_batch(images, self.input_size, self.max_batch)
        parts = np.array_split(images, min(self.streams, len(images))) if len(images) else []
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.describe()}: closed")
            requests = [self._idle.pop() if self._idle else self._compiled.create_infer_request()
                        for _ in parts]
        try:
            for request, part in zip(requests, parts, strict=True):
                request.start_async({0: np.ascontiguousarray(part)}, share_inputs=False)
        except Exception:
            self._release(requests)
            raise
        return _Pending(self, requests)

    def warm_up(self, batch_sizes: Iterable[int] = (1,)) -> float:
        """Run each batch size once: the first inference of a shape pays for its kernels."""
        return warm_up_sizes(self, (min(n, self.max_batch) for n in batch_sizes if n > 0))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._idle.clear()

    # -- internals ---------------------------------------------------------------------

    def _release(self, requests: list[Any]) -> None:
        for request in requests:
            try:
                request.wait()  # a request is reused only once its last run is over
            except Exception:  # its error was (or will be) raised to the batch's caller
                continue
            with self._lock:
                if not self._closed:
                    self._idle.append(request)

    def _decode(self, probs: np.ndarray, embedding: np.ndarray) -> TopK:
        top_probs, indices = top_k_rows(probs, self.top_k)
        return TopK(top_probs, indices,
                    embedding.astype(np.float32, copy=False) if self.with_embedding else None)
