"""Getting the species model: find or download the checkpoint, load it, pick device and dtype.

birder builds the network and reads the `.pt` file; what this module adds is what a daemon
needs around it: a download that can never hang (birder's has no timeout), errors that name
the file and the fix instead of a KeyError deep in torch, and a model that is fixed for
inference once at load (eval mode, no grads, one patch size).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch

from camtrap.config import ModelConfig

log = logging.getLogger(__name__)

CLASSIFICATION_TASK = "image_classification"
LIST_MODELS_HINT = (
    "list the downloadable names with `python -m birder.tools list-models --pretrained`, "
    "or set model.path to a local .pt checkpoint"
)
_CHUNK = 256 * 1024


class ModelError(Exception):
    """The model cannot be found, fetched or loaded; the message names the file/URL and why."""


@dataclass(frozen=True)
class RegistryEntry:
    """What birder's registry says about a pretrained model name."""

    url: str  # of the .pt file
    sha256: str | None
    network: str


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


# --------------------------------------------------------------------------- registry


_birder_imported = False


def _registry() -> Any:
    """birder's model registry, with every network registered (importing birder does that)."""
    global _birder_imported
    import birder  # noqa: F401  (registers all networks)
    from birder.model_registry import registry

    if not _birder_imported:
        _birder_imported = True
        adopt_birder_logging()
    return registry


def adopt_birder_logging() -> None:
    """Route birder's log lines through camtrap's logging.

    Importing birder runs `logging.config.dictConfig`, giving the `birder` logger its own
    console handler, level INFO and propagate=False, so its lines would bypass our format
    and levels. Done once, at the first import; `logging.modules.birder` set after that wins.
    """
    birder_log = logging.getLogger("birder")
    birder_log.handlers.clear()
    birder_log.propagate = True
    birder_log.setLevel(logging.NOTSET)


def registry_entry(name: str) -> RegistryEntry | None:
    """Where birder's registry says `name`.pt lives and its sha256, or None if unknown."""
    registry = _registry()
    if not registry.pretrained_exists(name):
        return None
    from birder.conf import settings

    meta = registry.get_pretrained_metadata(name)
    base = meta.get("url", settings.REGISTRY_BASE_URL).rstrip("/")
    sha = meta.get("formats", {}).get("pt", {}).get("sha256")
    return RegistryEntry(f"{base}/{name}.pt", sha, meta["net"]["network"])


def network_name(model_name: str, checkpoint: dict[str, Any] | None = None) -> str:
    """The birder network (architecture) behind a weights name.

    In order: a `network` key in the checkpoint (birder's own files have none), the
    registry's metadata for a known pretrained name, the name itself if it is a network,
    else the longest `_`-separated prefix that is one (`<network>_<tag>` is birder's
    naming rule, so `flexivit_reg1_s16_rms_ls_my-tag` maps to `flexivit_reg1_s16_rms_ls`).
    """
    registry = _registry()
    if checkpoint is not None and isinstance(checkpoint.get("network"), str):
        return checkpoint["network"]
    entry = registry_entry(model_name)
    if entry is not None:
        return entry.network
    parts = model_name.split("_")
    for end in range(len(parts), 0, -1):
        candidate = "_".join(parts[:end])
        if registry.exists(candidate):
            return candidate
    raise ModelError(f"unknown network for model {model_name!r}; {LIST_MODELS_HINT}")


# --------------------------------------------------------------------------- download


def model_url(cfg: ModelConfig, entry: RegistryEntry | None) -> str | None:
    """The URL to fetch `cfg.name` from.

    `model.download_url` ending in `.pt` is the file's full URL; any other value is a mirror
    base, and the file is `<base>/<name>.pt` (the registry's own layout). http(s):// and
    file:// (a mounted share) work. Without it, the registry's URL; None when the registry
    does not know the name.
    """
    if cfg.download_url:
        if urlsplit(cfg.download_url).path.endswith(".pt"):
            return cfg.download_url
        return f"{cfg.download_url.rstrip('/')}/{cfg.name}.pt"
    return entry.url if entry else None


def resolve_checkpoint(cfg: ModelConfig, progress: bool = True) -> Path:
    """The local checkpoint for `cfg`, downloading it into `models_dir` on first use.

    `model.path` wins and is never downloaded. Otherwise `<models_dir>/<name>.pt` is used
    when present (checked against the registry's sha256 when known: a mirror serves the same
    bytes) and fetched when absent. Any failure is a ModelError that says what to do.
    """
    if cfg.path is not None:
        if not cfg.path.is_file():
            raise ModelError(f"model.path {cfg.path}: file not found")
        return cfg.path
    entry = registry_entry(cfg.name)
    dest = cfg.models_dir / f"{cfg.name}.pt"
    sha = entry.sha256 if entry else None
    if dest.is_file():
        _check_sha(dest, sha)
        return dest
    url = model_url(cfg, entry)
    if url is None:
        raise ModelError(
            f"model {cfg.name!r} is not in birder's registry and {dest} does not exist; "
            f"{LIST_MODELS_HINT}"
        )
    download(url, dest, sha, cfg.download_timeout_s, progress)
    return dest


def _check_sha(path: Path, expected: str | None) -> None:
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(
            f"{path}: sha256 {actual} does not match the registry's {expected} "
            "(a partial or different file); delete it to download again, or set model.path "
            "to use it anyway"
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str | None, timeout_s: float, progress: bool) -> None:
    """Fetch `url` to `dest` atomically (temp file + rename), or raise ModelError.

    `timeout_s` bounds every wait: the DNS lookup, the connect, and each read, so a
    silent server fails in about `timeout_s`, while a slow but moving download of the
    84 MB file is allowed to take as long as it needs.
    """
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.partial")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(dest, timeout_s)
        _resolve_host(url, timeout_s)
        digest = _fetch(url, tmp, timeout_s, progress)
        if sha256 is not None and digest != sha256:
            raise ValueError(f"sha256 of the download is {digest}, expected {sha256}")
        os.replace(tmp, dest)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise ModelError(
            f"cannot download {url} to {dest}: {_describe(exc)}. Fetch the file another way "
            f"and place it at {dest}, or set model.path to a local checkpoint"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale_partials(dest: Path, timeout_s: float) -> None:
    """Temp files of killed downloads; a live one is written to at least every timeout_s."""
    cutoff = time.time() - max(60.0, 2 * timeout_s)
    for partial in dest.parent.glob(f".{dest.name}.*.partial"):
        with contextlib.suppress(OSError):
            if partial.stat().st_mtime < cutoff:
                partial.unlink()


def _resolve_host(url: str, timeout_s: float) -> None:
    """Look the host up in a helper thread: getaddrinfo ignores socket timeouts."""
    parts = urlsplit(url)
    if parts.scheme == "file":  # a local or mounted mirror: nothing to look up
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"unsupported URL (need http://, https:// or file://): {url}")
    result: list[BaseException | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
            result.append(None)
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=lookup, name="model-dns", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not result:
        raise TimeoutError(f"DNS lookup of {parts.hostname} took over {timeout_s:g} s")
    if result[0] is not None:
        raise result[0]


def _fetch(url: str, tmp: Path, timeout_s: float, progress: bool) -> str:
    """Stream the body into `tmp` with a progress bar; return its sha256."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "camtrap"})
    digest = hashlib.sha256()
    with urllib.request.urlopen(request, timeout=timeout_s) as response, tmp.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024,
            desc=Path(urlsplit(url).path).name, disable=not progress,
        ) as bar:
            while block := response.read(_CHUNK):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
        got = out.tell()
    if total is not None and got != total:
        raise ValueError(f"connection closed after {got} of {total} bytes")
    return digest.hexdigest()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return _describe(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
    if isinstance(exc, TimeoutError):
        return f"timed out ({exc})" if str(exc) else "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


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
