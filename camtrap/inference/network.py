"""Loading the network from a checkpoint through birder, fixed for inference once (eval mode,
no grads, one patch size), and picking device, dtype and threads. Errors name the file and why,
instead of a KeyError deep in torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from camtrap.config.models import ModelConfig
from camtrap.inference.checkpoint import LIST_MODELS_HINT, ModelError, _registry, network_name

log = logging.getLogger(__name__)

CLASSIFICATION_TASK = "image_classification"
@dataclass
class LoadedModel:
    """A network ready for inference plus what preprocessing and reporting need."""

    net: torch.nn.Module
    labels: list[str]  # ordered by class index
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    network: str
    patch_size: int
    path: Path


# --------------------------------------------------------------------------- loading


def load_network(path: Path, cfg: ModelConfig, device: torch.device) -> LoadedModel:
    """Load a birder classification checkpoint, fixed for inference at `cfg.patch_size`.

    The file is validated first (cheaply, memory-mapped) so that each way a file can be
    wrong gets its own message instead of a KeyError from inside birder.
    """
    path = Path(path)
    checkpoint = _read_checkpoint(path)
    labels = _labels(path, checkpoint)
    _check_input_size(path, checkpoint, cfg.input_size)
    try:
        network = network_name(cfg.name, checkpoint)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    net = _build(path, network, device)
    _fix_patch_size(path, net, cfg.patch_size, cfg.input_size)
    rgb = checkpoint.get("rgb_stats") or {}
    try:
        mean, std = tuple(map(float, rgb["mean"])), tuple(map(float, rgb["std"]))
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{path}: checkpoint has no usable rgb_stats (mean/std)") from None
    log.info("model %s (%s, %d classes, patch %d) on %s", path, network, len(labels),
             cfg.patch_size, device)
    return LoadedModel(net, labels, mean, std, cfg.input_size, network, cfg.patch_size, path)


def _read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {first_line}"
        ) from exc
    if not isinstance(checkpoint, dict) or "state" not in checkpoint:
        raise ModelError(f"{path}: not a birder checkpoint (no 'state' entry)")
    return checkpoint


def _labels(path: Path, checkpoint: dict[str, Any]) -> list[str]:
    task = checkpoint.get("task")
    class_to_idx = checkpoint.get("class_to_idx")
    if task != CLASSIFICATION_TASK or not isinstance(class_to_idx, dict) or not class_to_idx:
        raise ModelError(
            f"{path}: not a classification checkpoint (task {task!r}, "
            f"{'no' if not class_to_idx else len(class_to_idx)} classes)"
        )
    labels = sorted(class_to_idx, key=class_to_idx.__getitem__)
    if [class_to_idx[name] for name in labels] != list(range(len(labels))):
        raise ModelError(f"{path}: class_to_idx indices are not 0..{len(labels) - 1}")
    return labels


def _check_input_size(path: Path, checkpoint: dict[str, Any], input_size: int) -> None:
    try:
        shape = checkpoint["signature"]["inputs"][0]["data_shape"]
        height, width = int(shape[2]), int(shape[3])
    except (KeyError, IndexError, TypeError, ValueError):
        raise ModelError(f"{path}: checkpoint has no input signature") from None
    if (height, width) != (input_size, input_size):
        raise ModelError(
            f"{path}: input size {height}x{width} does not match model.input_size "
            f"{input_size}"
        )


def _build(path: Path, network: str, device: torch.device) -> torch.nn.Module:
    from birder.common import fs_ops

    if not _registry().exists(network):
        raise ModelError(f"{path}: unknown network {network!r}; {LIST_MODELS_HINT}")
    try:
        net, _info = fs_ops.load_model(device, network, path=path, inference=True)
    except Exception as exc:  # size mismatches, missing keys: RuntimeError from torch
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{path}: weights do not fit network {network!r}: {first_line}"
        ) from exc
    net.eval()
    net.requires_grad_(False)
    return net


def _fix_patch_size(path: Path, net: torch.nn.Module, patch_size: int, input_size: int) -> None:
    """One patch size for the model's life: training mode or per-call sizes re-sample."""
    if input_size % patch_size:
        raise ModelError(f"{path}: patch size {patch_size} does not divide input {input_size}")
    if hasattr(net, "adjust_patch_size"):
        set_patch_size(net, patch_size)
    elif getattr(net, "patch_size", patch_size) != patch_size:
        log.warning("%s: network is not FlexiViT; model.patch_size %d ignored", path, patch_size)


def set_patch_size(net: torch.nn.Module, patch_size: int) -> None:
    """`net.adjust_patch_size`, with the position embedding resized as in training.

    FlexiViT was fine-tuned with a random patch size per forward, where birder resizes the
    position grid with `antialias=pos_embed_antialias` (False). `adjust_patch_size` resizes
    it with antialias=True instead, which differs when the grid shrinks (patch > 16 at
    240 px) and moves probabilities by up to ~1e-2. We redo that one step the training way,
    so the result equals birder's per-call `net(x, patch_size=p)` without its per-call cost.
    """
    from birder.net.vit import adjust_position_embedding

    old_patch = net.patch_size
    pos = getattr(net, "pos_embedding", None)
    original = None if pos is None else pos.detach().clone()
    net.adjust_patch_size(patch_size)
    if original is not None and old_patch != patch_size:
        height, width = net.size
        prefix = net.num_special_tokens if net.pos_embed_special_tokens else 0
        with torch.no_grad():
            resized = adjust_position_embedding(
                original,
                (height // old_patch, width // old_patch),
                (height // patch_size, width // patch_size),
                prefix,
                interpolation_mode=net.pos_embed_interpolation_mode,
                antialias=net.pos_embed_antialias,
            )
        net.pos_embedding = torch.nn.Parameter(resized, requires_grad=False)
    net.requires_grad_(False)  # adjust_patch_size replaces parameters


# --------------------------------------------------------------------------- device, dtype


def select_device(cfg: ModelConfig) -> torch.device:
    """`auto` is the first GPU when there is one; asking for a missing GPU is an error."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(cfg.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"model.device is {cfg.device!r} but CUDA is not available")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ModelError(
                f"model.device is {cfg.device!r} but only {torch.cuda.device_count()} "
                "GPU(s) are visible"
            )
    return device


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: where bf16 on a CPU is faster than fp32 rather than emulated."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        caps = get()
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16") or caps.get("bf16"))
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def select_dtype(cfg: ModelConfig, device: torch.device) -> torch.dtype:
    """Compute precision for the forward pass.

    GPU: `auto` is bf16 where supported, else fp16. CPU: `auto` is fp32 (exact parity with
    birder's reference); `bf16` is honoured where the CPU has native bf16 (about 2x faster
    here) and falls back to fp32 with a warning where it would be emulated (slower);
    `fp16` on a CPU falls back to fp32 with a warning.
    """
    if cfg.precision == "fp32":
        return torch.float32
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if cfg.precision == "fp16" or not bf16_ok:
            if cfg.precision == "bf16":
                log.warning("GPU has no bf16 support: using fp16")
            return torch.float16
        return torch.bfloat16
    if cfg.precision == "auto":
        return torch.float32
    if cfg.precision == "bf16" and cpu_has_native_bf16():
        return torch.bfloat16
    log.warning("model.precision %s is not native on this CPU: using fp32", cfg.precision)
    return torch.float32


def apply_threads(cfg: ModelConfig) -> None:
    """`model.threads` caps torch's intra-op threads (leave cores to decode and motion)."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
