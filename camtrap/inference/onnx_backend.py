"""The ONNX Runtime engine: the checkpoint exported once to ONNX (camtrap.inference.convert)
and run on the CPU in fp32, exact against birder; a smaller dependency than OpenVINO, which
is the faster of the two here (bench/RESULTS.md).

Its threads do not spin while waiting for work (`session.intra_op.allow_spinning` 0), for the
same reason the CLI sets OMP_WAIT_POLICY=PASSIVE for torch: spinning threads starve the
camera threads that share the cores.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from camtrap.config.models import ModelConfig, OnnxRuntimeBackendConfig
from camtrap.inference.backend import TopK, check_batch, warm_up_sizes
from camtrap.inference.convert import (
    INPUT_NAME,
    OUTPUT_NAMES,
    Converted,
    load_converted,
    require_package,
    top_k_rows,
)

log = logging.getLogger(__name__)


class _Done:
    """A batch ONNX Runtime has already run (`submit` is synchronous)."""

    def __init__(self, top: TopK) -> None:
        self._top = top

    def result(self) -> TopK:
        return self._top


class OnnxRuntimeBackend:
    """birder's network in an ONNX Runtime session on the CPU, fp32; one batch at a time."""

    def __init__(self, cfg: ModelConfig, options: OnnxRuntimeBackendConfig, *,
                 max_batch: int = 64) -> None:
        self._ort = require_package("onnxruntime")
        self.cfg = cfg
        self.options = options
        self.converted: Converted
        self.converted, self._session = load_converted(cfg, "onnxruntime", options.precision,
                                                       self._open)
        self.labels = self.converted.labels
        self.input_size = self.converted.key.input_size
        self.patch_size = self.converted.key.patch_size
        self.top_k = min(cfg.top_k, len(self.labels))
        self.with_embedding = cfg.embedding
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._closed = False
        log.info("%s", self.describe())

    def _open(self, converted: Converted) -> Any:
        ort = self._ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.options.threads  # 0: one per physical core
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(converted.model_file), options,
                                    providers=["CPUExecutionProvider"])

    @property
    def precision(self) -> str:
        return self.options.precision

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @property
    def max_in_flight(self) -> int:
        return 1  # `submit` does the work

    @property
    def embedding_size(self) -> int | None:
        return self.converted.embedding_size if self.with_embedding else None

    def describe(self) -> str:
        threads = self.options.threads or "auto"
        return (f"onnxruntime cpu {self.options.precision} patch {self.patch_size} "
                f"({threads} threads)")

    def submit(self, images: np.ndarray) -> _Done:
        """Run one batch of up to `max_batch` uint8 NHWC images; done when it returns."""
        check_batch(images, self.input_size, self.max_batch)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.describe()}: closed")
            if len(images):
                probs, embedding = self._session.run(
                    list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(images)})
            else:
                probs = np.zeros((0, len(self.labels)), np.float32)
                embedding = np.zeros((0, self.converted.embedding_size), np.float32)
        top_probs, indices = top_k_rows(probs, self.top_k)
        return _Done(TopK(top_probs, indices, embedding if self.with_embedding else None))

    def warm_up(self, batch_sizes: Iterable[int] = (1,)) -> float:
        return warm_up_sizes(self, (min(n, self.max_batch) for n in batch_sizes if n > 0))

    def close(self) -> None:
        with self._lock:
            self._closed = True
