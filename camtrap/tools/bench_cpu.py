"""The CPU side of `camtrap bench classifier`: which engines to measure beside torch, the
ceiling they are held against (one large fp32 and bf16 matrix multiply through OpenVINO's
kernels), the model's FLOPs per image, and waiting for a quiet turn on a shared machine."""

from __future__ import annotations

import argparse
import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def others_cpu(window_s: float = 0.25) -> float:
    """Cores other processes kept busy over `window_s`: /proc/stat's busy time minus ours.
    NaN where /proc/stat cannot be read."""

    def busy() -> float:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(v) for v in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    try:
        before, ours = busy(), time.process_time()
        time.sleep(window_s)
        return max(0.0, (busy() - before - (time.process_time() - ours)) / window_s)
    except (OSError, ValueError, IndexError):
        return float("nan")


def wait_quiet(threshold: float, max_wait_s: float) -> None:
    """Wait until other processes use under `threshold` cores (at most `max_wait_s`): on a
    shared machine a turn that starts under someone else's burst measures them, not us."""
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline and not others_cpu() < threshold:
        pass


GEMM_SIZE = 3072  # square: large enough that the kernel, not the call, is timed
GEMM_LIBRARIES = ("onednn", "openvino")


def gemm_calls(precision: str) -> dict[str, Callable[[], int]]:
    """One GEMM_SIZE^3 matrix multiply at `precision` through each library that has one
    here (oneDNN through torch; OpenVINO, whose kernels the converted engines run),
    warmed up. Each returns 1: timed like an image, a call is 2 * GEMM_SIZE**3 FLOPs.
    The ceiling is the faster of them."""
    calls = {"onednn": onednn_gemm(precision)}
    ov_call = openvino_gemm(precision)
    if ov_call is not None:
        calls["openvino"] = ov_call
    for call in calls.values():
        call()
    return calls


def onednn_gemm(precision: str) -> Callable[[], int]:
    """torch's oneDNN GEMM: mkldnn_linear in fp32 (torch's own fp32 matmul goes through
    MKL, slower on AMD CPUs), the plain bf16 matmul (oneDNN already)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(GEMM_SIZE, GEMM_SIZE, generator=generator) for _ in range(2))
    if precision == "fp32":
        a, b = a.to_mkldnn(), b.to_mkldnn()

        def one() -> int:
            torch._C._nn.mkldnn_linear(a, b, None)
            return 1
    else:
        a, b = a.bfloat16(), b.bfloat16()

        def one() -> int:
            torch.matmul(a, b)
            return 1

    return one


def openvino_gemm(precision: str) -> Callable[[], int] | None:
    """The same multiply as an OpenVINO MatMul; None without openvino."""
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return None
    n = GEMM_SIZE
    rng = np.random.default_rng(0)
    a = ops.parameter([n, n], ov.Type.f32)
    b = ops.constant(rng.standard_normal((n, n), dtype=np.float32))
    model = ov.Model([ops.matmul(a, b, False, False)], [a])
    compiled = ov.Core().compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16",
        "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    x = rng.standard_normal((n, n), dtype=np.float32)

    def one() -> int:
        request.infer({0: x})
        return 1

    return one


def model_gflop(ckpt: Path, base: Any, patch: int) -> float:
    """FLOPs of one image's forward at `patch`, attention included (SDPA counted through
    its math path: the default counter skips CPU SDPA)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from camtrap.inference.network import load_network

    loaded = load_network(ckpt, base.model_copy(update={"patch_size": patch}),
                          torch.device("cpu"))
    x = torch.zeros(1, 3, base.input_size, base.input_size)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(
            display=False) as counter:
        loaded.net(x)
    return counter.get_total_flops() / 1e9


def ceiling_fractions(rows: list[Any], ceilings: dict[str, Any], gflop: float) -> None:
    """Each row's model GFLOP/s as a fraction of the fastest GEMM at its precision (bf16
    rows against bf16, the others against fp32), in its `extra`; the first row (the
    reference) also gets the FLOPs per image, each ceiling row its GFLOP/s."""
    best: dict[str, float] = {}
    for ceiling in ceilings.values():
        gflops = round(ceiling.median_images_per_s * 2 * GEMM_SIZE**3 / 1e9, 1)
        ceiling.extra["gflop_per_s"] = gflops
        best[ceiling.precision] = max(best.get(ceiling.precision, 0.0), gflops)
    for r in rows:
        top = best.get("bf16" if "bf16" in r.precision else "fp32")
        if top:
            r.extra["fraction_of_ceiling"] = round(r.median_images_per_s * gflop / top, 3)
    if rows:
        rows[0].extra["gflop_per_image"] = round(gflop, 2)


def engine_versions(engines: list[tuple[str, str]]) -> str:
    """'; openvino 2026.4.1, ...' for the engines measured ('' for none)."""
    names = sorted({engine for engine, _ in engines})
    found = [f"{n} {importlib.import_module(n).__version__.split('-')[0]}" for n in names]
    return "; " + ", ".join(found) if found else ""


def engine_name(clf: Any) -> str:
    """torch, openvino or onnxruntime: the first word of every engine's describe()."""
    return str(clf.describe()).split()[0]


def engine_precision(clf: Any) -> str:
    return str(clf.precision)  # fp32, bf16, ... as each engine names it


def converted_engines(args: argparse.Namespace, device: Any) -> list[tuple[str, str]]:
    """(engine, precision) of the CPU engines to measure beside torch: those asked for with
    --backend, else every importable one on a CPU; openvino at fp32 plus bf16 where native
    (or the --precision values it has), onnxruntime at fp32."""
    from camtrap.inference.convert import engine_available, require_package
    from camtrap.inference.openvino_backend import native_bf16

    wanted = args.backend or (["openvino", "onnxruntime"] if device.type == "cpu" else [])
    found: list[tuple[str, str]] = []
    for engine in ("openvino", "onnxruntime"):
        if engine not in wanted or not engine_available(engine):
            continue
        if engine == "onnxruntime":
            found.append((engine, "fp32"))
            continue
        if args.precision:
            precisions = [p for p in args.precision if p in ("fp32", "bf16")] or ["fp32"]
        else:
            precisions = ["fp32"] + (["bf16"] if native_bf16(require_package(engine).Core())
                                     else [])
        found += [(engine, p) for p in precisions]
    return found


def converted_config(base: Any, ckpt: Path, patch: int, engine: str, precision: str) -> Any:
    """The model config that runs `engine` at `precision` on `ckpt`."""
    from camtrap.config.models import ModelConfig

    data = {**base.model_dump(), "path": ckpt, "patch_size": patch, "device": "cpu",
            "precision": "auto", "compile": False, "threads": 0,
            "backend": {"type": engine, "precision": precision}}
    return ModelConfig.model_validate(data)
