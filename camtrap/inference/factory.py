"""The one place that names an engine: callers ask for a `Backend` by config."""

from __future__ import annotations

import logging

from camtrap.config.models import (
    AutoBackendConfig,
    ModelConfig,
    OnnxRuntimeBackendConfig,
    OpenVINOBackendConfig,
    TorchBackendConfig,
)
from camtrap.inference.backend import Backend, bucket_sizes
from camtrap.inference.convert import engine_available

log = logging.getLogger(__name__)


def make_backend(model_cfg: ModelConfig, max_batch: int) -> Backend:
    """The engine for `model_cfg`, loaded and taking batches of up to `max_batch`.

    An engine's libraries are imported here, on first use, so that commands which never
    classify (`camtrap check`) never import torch. Raises ModelError when the model cannot
    be found, converted or loaded, or the engine's package is missing.
    """
    model_cfg = resolve_backend(model_cfg)
    backend = model_cfg.backend
    if isinstance(backend, OpenVINOBackendConfig):
        from camtrap.inference.openvino_backend import OpenVINOBackend

        return OpenVINOBackend(model_cfg, backend, max_batch=max_batch)
    if isinstance(backend, OnnxRuntimeBackendConfig):
        from camtrap.inference.onnx_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_cfg, backend, max_batch=max_batch)
    from camtrap.inference.torch_backend import TorchBackend

    return TorchBackend(model_cfg, max_batch=max_batch)


def load_backend(model_cfg: ModelConfig, max_batch: int) -> Backend:
    """`make_backend`, warmed up at every batch size the worker can form, so that the first
    bird after a start or a reload is not the one that pays for the setup."""
    backend = make_backend(model_cfg, max_batch)
    backend.warm_up(bucket_sizes(backend.max_batch))
    return backend


def resolve_backend(model_cfg: ModelConfig) -> ModelConfig:
    """`model_cfg` with `backend: auto` replaced by the engine it stands for here (logged);
    any other backend as it is."""
    backend = model_cfg.backend
    if not isinstance(backend, AutoBackendConfig):
        return model_cfg
    chosen, reason = choose_engine(model_cfg, backend)
    log.info("model.backend auto: %s (%s)", chosen.type, reason)
    update: dict[str, object] = {"backend": chosen}
    if isinstance(chosen, TorchBackendConfig) and reason.startswith("CPU"):
        update["precision"] = _torch_cpu_precision(backend.precision)
    return model_cfg.model_copy(update=update)


def choose_engine(model_cfg: ModelConfig, auto: AutoBackendConfig
                  ) -> tuple[TorchBackendConfig | OpenVINOBackendConfig
                             | OnnxRuntimeBackendConfig, str]:
    """The fastest engine available for the device (bench/RESULTS.md), and why: torch on
    CUDA; on a CPU openvino, else onnxruntime (fp32 only), else torch."""
    if _uses_cuda(model_cfg.device):
        return TorchBackendConfig(), f"model.device {model_cfg.device}: CUDA"
    if engine_available("openvino"):
        return (OpenVINOBackendConfig(type="openvino", precision=auto.precision),
                f"CPU, openvino importable, precision {auto.precision}")
    if engine_available("onnxruntime"):
        if auto.precision != "fp32":
            log.warning("model.backend auto: onnxruntime runs fp32 only (openvino is not "
                        "installed), not %s", auto.precision)
        return (OnnxRuntimeBackendConfig(type="onnxruntime"),
                "CPU, openvino not importable, onnxruntime importable")
    return TorchBackendConfig(), "CPU, neither openvino nor onnxruntime importable"


def _uses_cuda(device: str) -> bool:
    """model.device names CUDA, or is auto on a machine where torch sees a GPU (only then
    is torch imported: a CPU box configured `device: cpu` never loads it for this)."""
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    import torch

    return bool(torch.cuda.is_available())


def _torch_cpu_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    from camtrap.inference.network import cpu_has_native_bf16

    return "bf16" if cpu_has_native_bf16() else "fp32"
