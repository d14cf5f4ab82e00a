"""birder's checkpoint converted for the CPU engines (an OpenVINO IR, an ONNX file), cached
under `model.models_dir/converted/<engine>/` keyed by the checkpoint's sha256, patch size,
input size and stored precision.

A converted graph fixes the patch size (the resized patch embedding and position grid are
baked in as constants), so each patch size is its own conversion. The graph takes the same
uint8 NHWC RGB crops as every engine and does the torch engine's preprocessing inside it:
float, x 1/255, minus mean, over std with the checkpoint's rgb_stats, the same operations in
the same order. Inside rather than in numpy because numpy's batch normalisation is slower than
the engine's fused one (research/cpu_backends.md) and because an exported model is then
whole: crops in, answers out, with nothing to re-implement beside it. The graph outputs the
softmax over every class and the pre-head embedding of the same forward; top-k stays in numpy
(`top_k_rows`), so one file serves every `model.top_k`.

An artefact folder is written beside its final place and renamed into it when complete (its
`model.json` is the last file written), so a crash mid-conversion leaves only a temp folder
that is never read and is removed later; a folder that cannot be read is converted again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from camtrap.config.models import ModelConfig
from camtrap.inference.checkpoint import ModelError, resolve_checkpoint, sha256_file

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the graph's inputs, outputs or preprocessing change: old caches go
ENGINES = ("openvino", "onnxruntime")
MODEL_FILES = {"openvino": ("model.xml", "model.bin"), "onnxruntime": ("model.onnx",)}
INPUT_NAME = "images"
OUTPUT_NAMES = ("probs", "embedding")
META_FILE = "model.json"
LABELS_FILE = "labels.json"
STALE_TEMP_S = 3600.0  # a conversion takes seconds: a temp folder this old is a dead one
# What to install for each engine (pyproject pins the tested ranges).
PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime", "nncf": "nncf"}

T = TypeVar("T")


@dataclass(frozen=True)
class ConvertKey:
    """What a converted graph depends on. `precision` is how the weights are stored: fp32, or
    int8 once quantised; bf16 is chosen when OpenVINO compiles the fp32 graph, so fp32 and
    bf16 share one file."""

    engine: str
    sha256: str  # of the checkpoint file
    patch_size: int
    input_size: int
    precision: str = "fp32"

    @property
    def dirname(self) -> str:
        return (f"{self.sha256[:16]}-p{self.patch_size}-s{self.input_size}-{self.precision}"
                f"-v{FORMAT}")


@dataclass(frozen=True)
class Converted:
    """A converted model on disk and everything an engine needs to run it."""

    path: Path  # the artefact folder
    key: ConvertKey
    labels: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embedding_size: int
    cached: bool  # found in the cache (rather than converted by this call)

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILES[self.key.engine][0]


# --------------------------------------------------------------------------- engines


def require_package(engine: str) -> ModuleType:
    """The engine's Python package, or a ModelError that says what to install."""
    package = PACKAGES[engine]
    try:
        return importlib.import_module(engine)
    except ImportError as exc:
        raise ModelError(
            f"model.backend {engine} needs the Python package {package!r}, which cannot be "
            f"imported ({exc}): install it with `pip install {package}` in camtrap's "
            "environment, or choose another model.backend"
        ) from None


def engine_available(engine: str) -> bool:
    """Whether `require_package(engine)` would succeed."""
    try:
        require_package(engine)
    except ModelError:
        return False
    return True


def top_k_rows(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best (probability, class) of each row, best first, as TopK wants them."""
    indices = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(probs, indices, axis=1).astype(np.float32, copy=False),
            indices.astype(np.int64))


# --------------------------------------------------------------------------- the cache


def cache_root(cfg: ModelConfig) -> Path:
    return cfg.models_dir / "converted"


def converted_model(cfg: ModelConfig, engine: str, precision: str = "fp32") -> Converted:
    """`cfg`'s checkpoint converted for `engine`: the cached folder when there is a complete
    one for this checkpoint, patch size, input size and precision, else converted now."""
    checkpoint = resolve_checkpoint(cfg)
    key = ConvertKey(engine, sha256_file(checkpoint), cfg.patch_size, cfg.input_size, precision)
    final = cache_root(cfg) / engine / key.dirname
    found = read_converted(final, key)
    if found is not None:
        log.info("%s: using the converted model in %s", engine, final)
        return found
    return convert_into(checkpoint, cfg, key, final)


def load_converted(cfg: ModelConfig, engine: str, precision: str,
                   load: Callable[[Converted], T]) -> tuple[Converted, T]:
    """`load` (an engine compiling the files) on the converted model; a cached folder that
    fails to load (a damaged file) is converted again once instead of failing the start."""
    converted = converted_model(cfg, engine, precision)
    try:
        return converted, load(converted)
    except Exception as exc:
        if not converted.cached:
            raise ModelError(f"{converted.path}: {engine} cannot load the model it "
                             f"converted: {exc}") from exc
        log.warning("%s: cannot load the cached %s (%s); converting again", engine,
                    converted.path, exc)
    converted = convert_into(resolve_checkpoint(cfg), cfg, converted.key, converted.path,
                             replace=True)
    try:
        return converted, load(converted)
    except Exception as exc:
        raise ModelError(f"{converted.path}: {engine} cannot load the model it converted: "
                         f"{exc}") from exc


def read_converted(folder: Path, key: ConvertKey | None = None) -> Converted | None:
    """The artefact in `folder` if it is complete (and made for `key`, when given)."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        labels = json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))
        found = ConvertKey(meta["engine"], meta["checkpoint_sha256"], int(meta["patch_size"]),
                           int(meta["input_size"]), meta["precision"])
        mean = tuple(float(v) for v in meta["rgb_stats"]["mean"])
        std = tuple(float(v) for v in meta["rgb_stats"]["std"])
        embedding_size = int(meta["embedding_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if meta.get("format") != FORMAT or (key is not None and found != key):
        return None
    if found.engine not in ENGINES or len(mean) != 3 or len(std) != 3:
        return None
    if not all((folder / name).is_file() for name in MODEL_FILES[found.engine]):
        return None
    if not isinstance(labels, list) or len(labels) != int(meta.get("num_classes", -1)):
        return None
    return Converted(folder, found, [str(x) for x in labels], mean, std,  # type: ignore[arg-type]
                     embedding_size, cached=True)


def convert_into(checkpoint: Path, cfg: ModelConfig, key: ConvertKey, final: Path, *,
                 replace: bool = False) -> Converted:
    """Convert `checkpoint` into the folder `final`, atomically: written in a temp folder
    beside it and renamed when complete. Another process that finished first wins; with
    `replace`, or when `final` is not a complete artefact (never one of ours: ours appear
    whole), an existing `final` is swapped out."""
    final.parent.mkdir(parents=True, exist_ok=True)
    replace = replace or (final.exists() and read_converted(final, key) is None)
    remove_stale_temps(final.parent)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    started = time.perf_counter()
    try:
        try:
            write_artefacts(checkpoint, cfg, key, tmp)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"{checkpoint}: cannot convert the model for {key.engine}: "
                             f"{type(exc).__name__}: {exc}") from exc
        _publish(tmp, final, replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    converted = read_converted(final, key)
    if converted is None:
        raise ModelError(f"{final}: the converted model cannot be read back")
    log.info("%s: converted %s (patch %d, %s) in %.1f s into %s", key.engine, checkpoint.name,
             key.patch_size, key.precision, time.perf_counter() - started, final)
    return dataclasses.replace(converted, cached=False)


def _publish(tmp: Path, final: Path, replace: bool) -> None:
    """Rename the complete `tmp` to `final` (atomic on one file system)."""
    _fsync_tree(tmp)
    old = None
    if replace and final.exists():
        old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old.tmp")
        os.replace(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise  # not "someone else finished first": a real failure
        log.info("%s: converted meanwhile by another process; using that one", final)
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(final.parent)


def remove_stale_temps(folder: Path) -> None:
    """Temp folders of conversions that died (a crash, a kill) long ago."""
    cutoff = time.time() - STALE_TEMP_S
    for tmp in folder.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < cutoff:
                shutil.rmtree(tmp)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def export_copy(converted: Converted, out: Path) -> Path:
    """The artefact's files copied into `out` (created, or replacing an earlier export)."""
    if out.exists() and any(out.iterdir()) and read_converted(out) is None:
        raise ModelError(f"{out}: exists and is not an exported model; choose an empty or "
                         "new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        shutil.copytree(converted.path, tmp)
        _publish(tmp, out, replace=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- conversion


def write_artefacts(checkpoint: Path, cfg: ModelConfig, key: ConvertKey, out: Path) -> None:
    """The model files, then labels.json, then model.json (the mark of a complete folder)."""
    import torch

    from camtrap.inference.network import load_network

    loaded = load_network(checkpoint, cfg, torch.device("cpu"))
    wrapped = preprocessed(loaded.net, loaded.mean, loaded.std)
    example = torch.zeros((2, key.input_size, key.input_size, 3), dtype=torch.uint8)
    with torch.no_grad(), _converter_quiet():
        if key.engine == "openvino":
            save_openvino(wrapped, example, out, key)
        elif key.engine == "onnxruntime":
            save_onnx(wrapped, example, out)
        else:
            raise ModelError(f"no converter for engine {key.engine!r}")
    embedding_size = int(loaded.net.embedding_size)
    (out / LABELS_FILE).write_text(json.dumps(loaded.labels, ensure_ascii=False, indent=0),
                                   encoding="utf-8")
    meta = {
        "format": FORMAT,
        "engine": key.engine,
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": key.sha256,
        "network": loaded.network,
        "patch_size": key.patch_size,
        "input_size": key.input_size,
        "precision": key.precision,
        "num_classes": len(loaded.labels),
        "embedding_size": embedding_size,
        "rgb_stats": {"mean": list(loaded.mean), "std": list(loaded.std)},
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC, RGB",
                  "shape": [-1, key.input_size, key.input_size, 3]},
        "outputs": {OUTPUT_NAMES[0]: "softmax over the classes of labels.json, [N, classes]",
                    OUTPUT_NAMES[1]: f"pre-head embedding, [N, {embedding_size}]"},
        "preprocessing": "in the graph: float(x) * (1/255), minus rgb_stats.mean, over "
                         "rgb_stats.std, per channel",
        "versions": _versions(key.engine),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def preprocessed(net: torch.nn.Module, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> torch.nn.Module:
    """`net` behind the torch engine's preprocessing: uint8 NHWC in, (softmax, embedding)."""
    import torch

    class Preprocessed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # the same arithmetic, in the same order, as TorchBackend._forward_impl
            x = images.permute(0, 3, 1, 2).to(torch.float32)
            x = (x * (1.0 / 255.0) - self.mean) / self.std
            embedding = self.net.embedding(x)
            probs = torch.softmax(self.net.classify(embedding).float(), dim=1)
            return probs, embedding

    return Preprocessed().eval()


def save_openvino(wrapped: torch.nn.Module, example: torch.Tensor, out: Path,
                  key: ConvertKey) -> None:
    """The IR with fp32 weights: `save_model` would store fp16 by default, which is not
    exact against birder even when compiled for f32."""
    ov = require_package("openvino")
    size = key.input_size
    model = ov.convert_model(wrapped, example_input=example,
                             input=[(ov.PartialShape([-1, size, size, 3]), ov.Type.u8)])
    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    for output, name in zip(model.outputs, OUTPUT_NAMES, strict=True):
        output.get_tensor().set_names({name})
    if key.precision == "int8":
        model = quantize_int8(model, key)
    ov.save_model(model, str(out / "model.xml"), compress_to_fp16=False)


def save_onnx(wrapped: torch.nn.Module, example: torch.Tensor, out: Path) -> None:
    """One self-contained .onnx file through torch's dynamo exporter (the TorchScript one
    has no rule for RMSNorm), with a dynamic batch."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    with _quiet_stdout():  # the exporter prints its progress
        torch.onnx.export(wrapped, (example,), str(out / "model.onnx"), dynamo=True,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_shapes=({0: batch},), external_data=False, verbose=False)


def quantize_int8(model: Any, key: ConvertKey) -> Any:
    """Post-training int8 with nncf, calibrated on synthetic photo-like crops.

    Opt-in only: with random weights its agreement with fp32 could not be known when this
    was written, so users check it on their own crops with `camtrap evaluate`.
    """
    nncf = require_package("nncf")
    crops = calibration_crops(128, key.input_size)
    dataset = nncf.Dataset([crops[i:i + 1] for i in range(len(crops))])
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)
    try:  # its progress bars would go to the daemon's console
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), \
                contextlib.redirect_stderr(devnull):
            return nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER,
                                 subset_size=len(crops))
    finally:
        nncf_log.setLevel(level)


def calibration_crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smoothed-noise crops with gradients: varied, photo-like statistics for calibration."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[None, :, None]
    for i in range(n):
        cells = int(rng.choice([4, 8, 16, 32]))
        small = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        img = 0.6 * img + 0.4 * (a + (b - a) * ramp)
        out[i] = np.clip(img + rng.normal(0, 6, img.shape), 0, 255)
    return out


@contextlib.contextmanager
def _quiet_stdout() -> Any:
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


@contextlib.contextmanager
def _converter_quiet() -> Any:
    """The converters' chatter (tracer warnings about FlexiViT's shape checks, the ONNX
    optimiser's INFO line per merged constant) is noise in the daemon's log."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _versions(engine: str) -> dict[str, str]:
    names = ["torch", "birder", "openvino" if engine == "openvino" else "onnx"]
    found = {}
    for name in names:
        with contextlib.suppress(ImportError):
            found[name] = str(importlib.import_module(name).__version__)
    return found
