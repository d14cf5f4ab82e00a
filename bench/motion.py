"""Motion cost per frame: ours vs OpenCV's MOG2 background subtractor, side by side.

    python -m bench.motion [--seconds 3] [--threads 0] [--json]

In one process, on the same frames (a textured, noisy feeder scene with a moving bird, made
here with a fixed seed), at 1920x1080 and 3840x2160:
  ours        MotionDetector.detect on the full-resolution BGR frame (downscale to about
              144 px of luma included), what every looked-at frame costs the camera thread
  ours/area   the same with a full INTER_AREA downscale first (the first version's approach)
  MOG2        cv2.createBackgroundSubtractorMOG2().apply on the full-resolution frame
The paths are measured in alternating slices so that a busy machine slows them alike. Both
wall time and CPU time (all threads: OpenCV parallelises MOG2) are reported per frame; the
ratio is MOG2 / ours. Target: ours at least 20x cheaper at 1080p.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np

from camtrap.config.models import MotionConfig
from camtrap.motion.detector import MotionDetector
from camtrap.tools.benchmark import cpu_model

SIZES = {"1080p": (1920, 1080), "4K": (3840, 2160)}


def scene(width: int, height: int, n: int = 16, seed: int = 0) -> list[np.ndarray]:
    """`n` frames: a blotchy green-grey background, sensor noise, a dark bird moving."""
    rng = np.random.default_rng(seed)
    base = np.array([124, 156, 140], np.float32)
    small = rng.normal(0, 22, (90, 160, 3)).astype(np.float32) + base
    bg = cv2.resize(np.clip(small, 0, 255).astype(np.uint8), (width, height),
                    interpolation=cv2.INTER_LINEAR)
    frames = []
    for i in range(n):
        frame = bg.copy()
        cx, cy = int(width * (0.3 + 0.03 * i)), int(height * (0.5 + 0.02 * np.sin(i)))
        cv2.ellipse(frame, (cx, cy), (width // 40, height // 45), 0, 0, 360, (26, 42, 58), -1)
        noise = rng.normal(0, 5, (height, width, 1)).astype(np.int16)
        frames.append(np.clip(frame + noise, 0, 255).astype(np.uint8))
    return frames


class Path_:
    """One measured path: a per-frame function and its accumulated wall and CPU time."""

    def __init__(self, name: str, step: Callable[[np.ndarray, float], object]) -> None:
        self.name, self.step = name, step
        self.frames, self.wall, self.cpu = 0, 0.0, 0.0

    def run(self, frames: list[np.ndarray], seconds: float) -> None:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        i = 0
        while time.perf_counter() - wall0 < seconds or i < 2:
            self.step(frames[(self.frames + i) % len(frames)], (self.frames + i) / 5.0)
            i += 1
        self.wall += time.perf_counter() - wall0
        self.cpu += time.process_time() - cpu0
        self.frames += i

    def result(self) -> dict[str, float]:
        return {"wall_ms": 1000 * self.wall / self.frames, "cpu_ms": 1000 * self.cpu / self.frames,
                "frames": self.frames}


def area_first(detector: MotionDetector) -> Callable[[np.ndarray, float], object]:
    """The first version's downscale: a full INTER_AREA resize of the BGR frame."""

    def step(frame: np.ndarray, ts: float) -> object:
        h, w = frame.shape[:2]
        small = cv2.resize(frame, (round(w * 144 / h), 144), interpolation=cv2.INTER_AREA)
        return detector.detect(small, ts)

    return step


def measure(size: tuple[int, int], seconds: float) -> dict[str, dict[str, float]]:
    frames = scene(*size)
    ours = MotionDetector(MotionConfig())
    area = MotionDetector(MotionConfig())
    mog2 = cv2.createBackgroundSubtractorMOG2()
    paths = [
        Path_("ours", ours.detect),
        Path_("ours/area", area_first(area)),
        Path_("MOG2", lambda f, _ts: mog2.apply(f)),
    ]
    for p in paths:  # warm-up: background models, allocations
        p.run(frames, 0.0)
        p.frames, p.wall, p.cpu = 0, 0.0, 0.0
    rounds = 5
    for _ in range(rounds):
        for p in paths:
            p.run(frames, seconds / rounds)
    return {p.name: p.result() for p in paths}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per path and size")
    parser.add_argument("--threads", type=int, default=-1,
                        help="cv2.setNumThreads (-1: OpenCV's default)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads >= 0:
        cv2.setNumThreads(args.threads)
    out: dict[str, object] = {"cpu": cpu_model(), "opencv": cv2.__version__,
                              "cv2_threads": cv2.getNumThreads(), "sizes": {}}
    for label, size in SIZES.items():
        res = measure(size, args.seconds)
        res["ratio"] = {
            "wall": res["MOG2"]["wall_ms"] / res["ours"]["wall_ms"],
            "cpu": res["MOG2"]["cpu_ms"] / res["ours"]["cpu_ms"],
        }
        out["sizes"][label] = res  # type: ignore[index]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"motion per frame on {out['cpu']}; OpenCV {out['opencv']}, "
          f"{out['cv2_threads']} cv2 threads")
    print(f"{'size':6} {'path':10} {'wall ms':>9} {'cpu ms':>9} {'frames':>7}")
    for label, res in out["sizes"].items():  # type: ignore[union-attr]
        for name in ("ours", "ours/area", "MOG2"):
            r = res[name]
            print(f"{label:6} {name:10} {r['wall_ms']:9.3f} {r['cpu_ms']:9.3f} {r['frames']:7d}")
        ratio = res["ratio"]
        print(f"{label:6} MOG2/ours: {ratio['wall']:.1f}x wall, {ratio['cpu']:.1f}x CPU"
              + ("  (target >= 20x at 1080p)" if label == "1080p" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
