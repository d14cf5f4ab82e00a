"""Classifier throughput and latency: ours vs birder's model-card path, side by side.

    camtrap bench classifier [--device cpu] [--patch 16 24] [--batch 16] [--seconds 5]
                             [--backend torch openvino onnxruntime]
    python -m bench.classifier --checkpoint models/flexivit_...pt --json

In one process, on the same images and the same weights, interleaved in rounds:
  reference     birder.classification_transform + birder.inference.classification.infer_image,
                one PIL image at a time, fp32 (what the model card shows)
  <engine> b1   each engine (torch, and on a CPU openvino and onnxruntime where importable,
                at each precision) on one crop
  <engine> bN   the same on --batch crops (and with 2 batches in flight where it overlaps)
  <engine> 4 cams  four camera threads feeding CropQueue -> InferenceWorker at 1.25x
                capacity (the daemon's real path, drops and all); latency is put -> sink
On a GPU it also measures the raw forward ceiling (bf16, batch 256, a pre-normalised
tensor already on the device) and our fraction of it. On a CPU the ceiling is one large
matrix multiply in fp32 and in bf16 (through oneDNN and OpenVINO, the faster counts), and
each row's fraction of it counts the model's FLOPs per image (attention included).

Without --checkpoint it builds a FULL-size random-init flexivit_reg1_s16_rms_ls (12 layers,
550 classes) in a temp dir with `camtrap.tools.checkpoints.build_checkpoint`, the tests'
builder: the real weights need a download, and speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from camtrap.tools.bench_cpu import (
    GEMM_SIZE,
    ceiling_fractions,
    converted_config,
    converted_engines,
    engine_name,
    engine_precision,
    engine_versions,
    gemm_calls,
    model_gflop,
    wait_quiet,
)
from camtrap.tools.checkpoints import FULL_CLASSES, FULL_LAYERS, NETWORK, build_checkpoint

MODEL_NAME = "flexivit_reg1_s16_rms_ls_dino-v2-il-all"
CAMERAS = 4


@dataclass
class Result:
    path: str
    patch: int
    precision: str
    batch: int
    images_per_s: float  # images done / wall time: what a loaded machine gives
    p50_ms: float
    p95_ms: float
    median_images_per_s: float  # batch / median call time: robust to other processes' load
    ratio_to_reference: float | None = None  # of median_images_per_s
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- setup


def bench_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smoothed-noise RGB crops: content does not change the speed, but keep it photo-like."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        small = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
        out[i] = np.clip(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255)
    return out


def cpu_model() -> str:
    """The CPU's model name and core count, for benchmark reports."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"{cpu_model()}, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


# --------------------------------------------------------------------------- timing

# One measured path: given a time slice, run it and return (images done, seconds, per-call
# latencies). Paths take turns in rounds so that load from other processes on the machine
# hits them alike and the ratios stay fair.
Runner = Callable[[float], tuple[int, float, list[float]]]


def timed_loop(fn: Callable[[], int], seconds: float,
               sync: Callable[[], None]) -> tuple[int, float, list[float]]:
    """Call `fn` (returns images done) until `seconds` pass, at least once."""
    calls: list[float] = []
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or not calls:
        t0 = time.perf_counter()
        done += fn()
        sync()
        calls.append(time.perf_counter() - t0)
    return done, time.perf_counter() - start, calls


def interleave(runners: list[Runner], seconds: float, rounds: int,
               gate: Callable[[], None] | None = None) -> list[tuple[float, list[float]]]:
    """Each runner gets `seconds` in total, in `rounds` turns; (images/s, latencies) each.
    `gate` runs before every turn (`wait_quiet` on a shared machine)."""
    done = [0] * len(runners)
    elapsed = [0.0] * len(runners)
    calls: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for i, run in enumerate(runners):
            if gate is not None:
                gate()
            n, took, latencies = run(seconds / rounds)
            done[i] += n
            elapsed[i] += took
            calls[i] += latencies
    return [(n / took, lat) for n, took, lat in zip(done, elapsed, calls, strict=True)]


def pct_ms(values: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(values, [50, 95]) * 1000.0
    return float(p50), float(p95)


def make_result(path: str, patch: int, precision: str, batch: int, rate: float,
                latencies: list[float], **extra: Any) -> Result:
    p50, p95 = pct_ms(latencies)
    robust = batch / (p50 / 1000.0) if p50 > 0 else float("nan")
    return Result(path, patch, precision, batch, rate, p50, p95, robust, extra=extra)


# --------------------------------------------------------------------------- the paths


def reference_runner(ckpt: Path, device: Any, patch: int, images: np.ndarray,
                     sync: Callable[[], None]) -> Runner:
    """The model card: load_model(inference=True), PIL image -> transform -> infer_image."""
    import birder
    from birder.common import fs_ops
    from birder.inference.classification import infer_image
    from PIL import Image

    net, info = fs_ops.load_model(device, NETWORK, path=ckpt, inference=True)
    size = birder.get_size_from_signature(info.signature)
    transform = birder.classification_transform(size, info.rgb_stats)
    kwargs = {} if patch == net.patch_size else {"patch_size": patch}  # birder's own way
    pil = [Image.fromarray(im) for im in images]
    counter = iter(range(1 << 62))

    def one() -> int:
        infer_image(net, pil[next(counter) % len(pil)], transform, device=device, **kwargs)
        return 1

    one()
    one()  # warm-up
    return lambda seconds: timed_loop(one, seconds, sync)


def ours_runner(clf: Any, batch: int, images: np.ndarray, sync: Callable[[], None]) -> Runner:
    """One batch of `batch` crops at a time; a crop's latency is its whole batch's time."""
    from camtrap.inference.backend import predict

    clf.warm_up([batch])
    predict(clf, images[:batch])
    offset = iter(range(1 << 62))

    def call() -> int:
        start = (next(offset) * batch) % (len(images) - batch + 1)
        predict(clf, images[start:start + batch])
        return batch

    return lambda seconds: timed_loop(call, seconds, sync)


def overlapped_runner(clf: Any, batch: int, images: np.ndarray) -> Runner:
    """The inference thread's CUDA schedule: batch k+1 is staged while batch k runs."""
    clf.warm_up([batch])
    offset = iter(range(1 << 62))
    state: dict[str, Any] = {"pending": None}

    def call() -> int:
        start = (next(offset) * batch) % (len(images) - batch + 1)
        pending = clf.submit(images[start:start + batch])
        if state["pending"] is None:
            state["pending"] = pending
            return 0
        state["pending"].result()
        state["pending"] = pending
        return batch

    def drain() -> None:
        if state["pending"] is not None:
            state["pending"].result()
            state["pending"] = None

    def run(seconds: float) -> tuple[int, float, list[float]]:
        result = timed_loop(call, seconds, lambda: None)
        drain()
        return result

    return run


def run_cameras(clf: Any, batch: int, images: np.ndarray, seconds: float, capacity: float,
                precision: str, patch: int) -> Result:
    """4 camera threads -> CropQueue -> InferenceWorker, offered 1.25x the batch capacity."""
    from camtrap.config.models import BatchingConfig

    batching = BatchingConfig(max_size=batch, max_wait_ms=30, queue_size=2 * batch)
    load = run_load(clf, batching, images, CAMERAS, 1.25 * capacity / CAMERAS, seconds,
                    ramp_s=max(1.0, 5 * batch / capacity))  # full queue, full batches
    return Result(
        f"{engine_name(clf)} {CAMERAS} cams->queue->worker", patch, precision, batch,
        load.classified_per_s, load.p50_ms, load.p95_ms, load.classified_per_s,
        extra={"offered_per_s": load.offered_per_s, "drops": load.drops,
               "batch_sizes": load.batch_sizes},
    )


@dataclass
class Load:
    """One step of the camera-capacity search: `cameras` feeding `rate` crops/s each."""

    cameras: int
    offered_per_s: float
    classified_per_s: float
    drops: int
    p50_ms: float
    p95_ms: float
    batch_sizes: dict[int, int]

    def sustained(self, max_p95_s: float) -> bool:
        return self.drops == 0 and self.p95_ms <= max_p95_s * 1000.0


def run_load(clf: Any, batching: Any, images: np.ndarray, cameras: int, rate: float,
             seconds: float, ramp_s: float = 2.0) -> Load:
    """`cameras` Poisson crop sources at `rate` each -> CropQueue -> InferenceWorker.

    The daemon's real path, drops and all. A few feeder threads share the cameras, so a
    search over hundreds of cameras measures the classifier, not Python's thread switching.
    """
    from camtrap.inference.backend import Prediction
    from camtrap.inference.queue import CropQueue
    from camtrap.inference.worker import InferenceWorker
    from camtrap.motion.regions import Crop

    queue = CropQueue(batching.queue_size)
    window = {"start": float("inf"), "end": float("inf")}
    latencies: list[float] = []
    completions: list[tuple[float, int]] = []  # (time, crops) per batch inside the window

    def sink(predictions: list[Prediction]) -> None:
        now = time.time()
        if window["start"] <= min(p.crop.ts for p in predictions) and now <= window["end"]:
            latencies.extend(now - p.crop.ts for p in predictions)
            completions.append((now, len(predictions)))

    worker = InferenceWorker(clf, queue, batching, sink)
    stop = threading.Event()

    def feeder(names: list[str], seed: int) -> None:
        rng = np.random.default_rng(seed)
        seq = 0
        while not stop.wait(rng.exponential(1.0 / (rate * len(names)))):
            queue.put(Crop(names[seq % len(names)], time.time(), seq, (0, 0, 240, 240),
                           (1920, 1080), images[seq % len(images)]))
            seq += 1

    names = [f"cam{i}" for i in range(cameras)]
    n_feeders = min(cameras, 8)
    threads = [threading.Thread(target=feeder, args=(names[i::n_feeders], i), daemon=True)
               for i in range(n_feeders)]
    worker.start()
    for t in threads:
        t.start()
    time.sleep(ramp_s)
    drops_before = sum(queue.drop_counts().values())
    window["start"] = time.time()
    time.sleep(seconds)
    window["end"] = time.time()
    drops = sum(queue.drop_counts().values()) - drops_before
    stop.set()
    quiet = logging.getLogger("camtrap.inference.worker")
    level, quiet.level = quiet.level, logging.ERROR  # crops left at stop are expected here
    worker.stop(drain_timeout_s=0.0)
    quiet.setLevel(level)
    p50, p95 = pct_ms(latencies or [float("inf")])
    return Load(cameras, round(cameras * rate, 1), round(steady_rate(completions), 1), drops,
                round(p50, 1), round(p95, 1), dict(sorted(worker.batch_sizes.items())))


def find_cameras(measure: Callable[[int], Load], max_p95_s: float, start: int = 4,
                 limit: int = 4096) -> list[Load]:
    """Double the cameras until a step drops a crop or misses the p95, then bisect to 1/8."""
    steps: list[Load] = []
    good, bad = 0, None
    n = start
    while n <= limit:
        steps.append(measure(n))
        log_step(steps[-1])
        if not steps[-1].sustained(max_p95_s):
            bad = n
            break
        good, n = n, 2 * n
    while bad is not None and bad - good > max(1, good // 8):
        n = (good + bad) // 2
        steps.append(measure(n))
        log_step(steps[-1])
        good, bad = (n, bad) if steps[-1].sustained(max_p95_s) else (good, n)
    return steps


def log_step(step: Load) -> None:
    print(f"  {step.cameras:5d} cameras: offered {step.offered_per_s:8.1f}/s, classified "
          f"{step.classified_per_s:8.1f}/s, dropped {step.drops}, p95 {step.p95_ms:.1f} ms",
          file=sys.stderr, flush=True)


def steady_rate(completions: list[tuple[float, int]]) -> float:
    """Crops/s between the first and last batch completion seen (no edge quantisation)."""
    if len(completions) < 2:
        return float("nan")
    crops = sum(n for _, n in completions[1:])
    return crops / (completions[-1][0] - completions[0][0])


def run_ceiling(clf: Any, seconds: float) -> Result:
    """GPU only: the bare network, bf16 autocast, batch 256, input already normalised."""
    import torch

    net, device = clf.model.net, clf.device
    x = torch.randn(256, 3, clf.input_size, clf.input_size, device=device)

    def call() -> int:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            net(x)
        return 256

    call()
    torch.cuda.synchronize()
    done, elapsed, calls = timed_loop(call, seconds, torch.cuda.synchronize)
    return make_result("raw forward ceiling (bf16 b256)", clf.model.patch_size, "bf16", 256,
                       done / elapsed, calls)


# --------------------------------------------------------------------------- driver


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="camtrap bench classifier", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--patch", type=int, nargs="+", default=None,
                   help="patch sizes (default: 16 plus --config's model.patch_size)")
    p.add_argument("--batch", type=int, default=16, help="max batch (default 16)")
    p.add_argument("--seconds", type=float, default=4.0,
                   help="per path and setting (default 4; the 4-camera run gets twice that)")
    p.add_argument("--rounds", type=int, default=2,
                   help="turns the paths take, interleaved, within --seconds (default 2)")
    p.add_argument("--precision", nargs="+", default=None,
                   help="ours: fp32 bf16 fp16 auto (default: auto, plus bf16 on a CPU "
                        "with native bf16)")
    p.add_argument("--checkpoint", type=Path, help="a birder .pt (default: random-init, "
                   "full-size, built in a temp dir)")
    p.add_argument("--config", type=Path, help="take patch size, device and precision "
                   "defaults from this config file")
    p.add_argument("--compile", action="store_true", help="torch.compile ours")
    p.add_argument("--quiet", type=float, metavar="CORES",
                   help="before each turn, wait (up to 30 s) until other processes use under "
                        "CORES cores: for shared machines (default: no waiting)")
    p.add_argument("--backend", nargs="+", choices=["torch", "openvino", "onnxruntime"],
                   help="engines to measure (default: torch, plus openvino and onnxruntime "
                        "on a CPU where importable)")
    p.add_argument("--find-cameras", action="store_true",
                   help="instead: how many cameras at --crop-rate crops/s each the classifier "
                        "sustains with no crop dropped and p95 within --max-p95")
    p.add_argument("--crop-rate", type=float, default=5.0,
                   help="crops/s per camera for --find-cameras (default 5: a bird always in "
                        "view at detect_fps 5)")
    p.add_argument("--start-cameras", type=int, default=4,
                   help="first step of --find-cameras, doubled from there (default 4)")
    p.add_argument("--max-p95", type=float, default=1.5,
                   help="seconds, put to prediction, for --find-cameras (default 1.5)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> tuple[Any, list[int], list[str]]:
    """The ModelConfig to start from, patch sizes and precisions to measure."""
    from camtrap.config.loader import load_config
    from camtrap.config.models import ModelConfig
    from camtrap.inference.network import cpu_has_native_bf16, select_device

    base = load_config(args.config).model if args.config else ModelConfig()
    if args.device != "auto" or not args.config:
        base = base.model_copy(update={"device": args.device})
    patches = args.patch or sorted({16, base.patch_size})
    precisions = args.precision
    if precisions is None:
        precisions = [base.precision]
        on_cpu = select_device(base).type == "cpu"
        if on_cpu and cpu_has_native_bf16() and base.precision in ("auto", "fp32"):
            precisions.append("bf16")
    return base, patches, precisions


def run_bench(argv: list[str]) -> int:
    """Run the benchmark; print a table (or JSON). Returns a process exit code."""
    args = parse_args(argv)
    import torch

    from camtrap.inference.network import select_device

    base, patches, precisions = plan(args)
    device = select_device(base)
    load_before = os.getloadavg()[0]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    images = bench_images(max(64, 2 * args.batch), base.input_size)  # a whole batch each
    results: list[Result] = []
    capacity: list[dict[str, Any]] = []
    engines = [] if args.find_cameras else converted_engines(args, device)
    with tempfile.TemporaryDirectory(prefix="camtrap-bench-") as tmp:
        ckpt = args.checkpoint or build_checkpoint(
            Path(tmp) / f"{MODEL_NAME}.pt", FULL_CLASSES, num_layers=FULL_LAYERS)
        base = base.model_copy(update={"models_dir": Path(tmp) / "models"})
        for patch in patches:
            cfgs = [] if args.backend and "torch" not in args.backend else [
                base.model_copy(update={"path": ckpt, "patch_size": patch, "precision": p,
                                        "compile": args.compile}) for p in precisions]
            if args.find_cameras:
                capacity += [capacity_search(args, cfg, images) for cfg in cfgs]
            else:
                converted = [converted_config(base, ckpt, patch, e, p) for e, p in engines]
                results += bench_patch(args, ckpt, device, patch, cfgs + converted, images,
                                       sync)
    load = f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    load += engine_versions(engines)
    if args.find_cameras:
        report_capacity(capacity, f"{device_name(device)}; {load}", args)
    else:
        report(results, f"{device_name(device)}; {load}", args.json)
    return 0


def capacity_search(args: argparse.Namespace, cfg: Any, images: np.ndarray) -> dict[str, Any]:
    """find_cameras for one patch size and precision, with the daemon's batching path."""
    from camtrap.config.models import BatchingConfig
    from camtrap.inference.backend import bucket_sizes
    from camtrap.inference.torch_backend import TorchBackend

    clf = TorchBackend(cfg, max_batch=args.batch)
    clf.warm_up(bucket_sizes(clf.max_batch))
    batching = BatchingConfig(max_size=args.batch, max_wait_ms=30,
                              queue_size=max(64, 4 * args.batch))
    precision = str(clf.dtype).removeprefix("torch.")
    print(f"patch {cfg.patch_size} {precision}, batch.max_size {batching.max_size}, "
          f"queue_size {batching.queue_size}:", file=sys.stderr, flush=True)
    steps = find_cameras(
        lambda n: run_load(clf, batching, images, n, args.crop_rate, 2 * args.seconds),
        args.max_p95, start=args.start_cameras)
    ok = [s.cameras for s in steps if s.sustained(args.max_p95)]
    return {"patch": cfg.patch_size, "precision": precision, "batch": batching.max_size,
            "queue_size": batching.queue_size, "sustained_cameras": max(ok, default=0),
            "steps": [asdict(s) for s in steps]}


def report_capacity(capacity: list[dict[str, Any]], device: str,
                    args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps({"device": device, "crop_rate": args.crop_rate,
                          "max_p95_s": args.max_p95, "capacity": capacity}, indent=2))
        return
    print(f"device: {device}")
    print(f"cameras at {args.crop_rate:g} crops/s each, no crop dropped, p95 <= "
          f"{args.max_p95:g} s (put to prediction):")
    for c in capacity:
        print(f"  patch {c['patch']:2d} {c['precision']:>8s} batch {c['batch']:4d}: "
              f"{c['sustained_cameras']} cameras")


def bench_patch(args: argparse.Namespace, ckpt: Path, device: Any, patch: int, cfgs: list[Any],
                images: np.ndarray, sync: Callable[[], None]) -> list[Result]:
    """Reference and every engine at one patch size, every precision, interleaved; ratios
    to the reference, and on a CPU fractions of the GEMM ceiling measured alongside."""
    from camtrap.inference.factory import make_backend

    classifiers, load_s = [], []
    for cfg in cfgs:
        started = time.perf_counter()  # conversion (first use) + compile + load
        classifiers.append(make_backend(cfg, args.batch))
        load_s.append(round(time.perf_counter() - started, 2))
    names = [engine_precision(clf) for clf in classifiers]
    runners = [reference_runner(ckpt, device, patch, images, sync)]
    for clf in classifiers:
        runners += [ours_runner(clf, 1, images, sync), ours_runner(clf, args.batch, images, sync)]
        if clf.max_in_flight > 1:
            runners.append(overlapped_runner(clf, args.batch, images))
    gemms: dict[tuple[str, str], Runner] = {}
    if device.type == "cpu":
        gemms = {(p, lib): (lambda s, c=c: timed_loop(c, s, lambda: None))
                 for p in ("fp32", "bf16") for lib, c in gemm_calls(p).items()}
    gate = None if args.quiet is None else (lambda: wait_quiet(args.quiet, 30.0))
    measured = iter(interleave(runners + list(gemms.values()), args.seconds, args.rounds,
                               gate))
    ref = make_result("reference (birder, 1 PIL image)", patch, "fp32", 1, *next(measured))
    section = [ref]
    per_engine: list[tuple[Any, list[Result]]] = []
    for clf, name, took in zip(classifiers, names, load_s, strict=True):
        label = engine_name(clf)
        b1 = make_result(f"{label} batch 1", patch, name, 1, *next(measured), load_s=took)
        bn = make_result(f"{label} batch {args.batch}", patch, name, args.batch,
                         *next(measured))
        ours = [b1, bn]
        if clf.max_in_flight > 1:
            ours.append(make_result(f"{label} batch {args.batch}, {clf.max_in_flight} in "
                                    "flight", patch, name, args.batch, *next(measured)))
        per_engine.append((clf, ours))
    ceilings = {key: make_result(f"ceiling: {key[0]} GEMM {GEMM_SIZE}^3 ({key[1]})", patch,
                                 key[0], 1, *next(measured)) for key in gemms}
    for clf, ours in per_engine:
        best = max(ours, key=lambda r: r.median_images_per_s)
        cams = run_cameras(clf, args.batch, images, 2 * args.seconds, best.images_per_s,
                           best.precision, patch)
        section += [*ours, cams]
        if device.type == "cuda":
            ceiling = run_ceiling(clf, args.seconds)
            for r in ours[1:]:
                r.extra["fraction_of_ceiling"] = round(
                    r.median_images_per_s / ceiling.median_images_per_s, 3)
            section.append(ceiling)
    if ceilings and cfgs:
        ceiling_fractions(section, ceilings, model_gflop(ckpt, cfgs[0], patch))
    for r in section:
        r.ratio_to_reference = round(r.median_images_per_s / ref.median_images_per_s, 2)
    return section + list(ceilings.values())


def report(results: list[Result], device: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"device": device, "results": [asdict(r) for r in results]}, indent=2))
        return
    print(f"device: {device}")
    print("img/s: images / wall time; med img/s: batch / median call (robust to other load);"
          " x ref: of med img/s")
    header = (f"{'path':38s} {'patch':>5s} {'prec':>8s} {'img/s':>7s} {'med img/s':>9s} "
              f"{'p50 ms':>8s} {'p95 ms':>8s} {'x ref':>6s}")
    print(header)
    print("-" * len(header))
    for r in results:
        extra = " ".join(f"{k}={v}" for k, v in r.extra.items())
        ratio = "-" if r.ratio_to_reference is None else f"{r.ratio_to_reference:.2f}"
        print(f"{r.path:38s} {r.patch:5d} {r.precision:>8s} {r.images_per_s:7.2f} "
              f"{r.median_images_per_s:9.2f} {r.p50_ms:8.1f} {r.p95_ms:8.1f} "
              f"{ratio:>6s}  {extra}")


def main(argv: list[str] | None = None) -> int:
    return run_bench(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
