"""How many 1080p 15 fps cameras this machine's CPU decodes and motion-filters.

    python -m bench.camera_cpu [--clip clip.mp4] [--procs 1 4 16] [--seconds 10]

The daemon's per-camera CPU work, on an H.264 file instead of a live stream: FFmpeg decodes
every frame (`grab`), one in three is converted and goes through `FrameProcessor` (motion,
regions, crops cut at 240 px), as at `detect_fps` 5 on a 15 fps stream. Each of N processes
reads its own copy of the clip as fast as it can, in a loop, so the total frame rate over
15 fps is the number of cameras the cores keep up with. It leaves out what a live stream adds
(RTSP, network) and the classifier, which `camtrap bench classifier --find-cameras` measures:
a machine sustains the smaller of the two.

Without --clip it uses bench/pipeline.py's 1080p clip with a bird always in view (built with
ffmpeg into the bench cache once).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

STREAM_FPS, DETECT_EVERY = 15, 3  # detect_fps 5 on a 15 fps stream


def worker(clip: str, seconds: float, start: float) -> dict[str, float]:
    """Read `clip` in a loop until `start + seconds`; report frames, processed, crops."""
    import cv2

    from camtrap.config.models import CameraConfig, MotionConfig, RegionsConfig
    from camtrap.motion.frames import FrameProcessor
    from camtrap.video.capture import Frame

    cam = CameraConfig(name="bench", url="rtsp://127.0.0.1/bench")
    proc = FrameProcessor(cam, MotionConfig(), RegionsConfig(), 240)
    frames = processed = crops = 0
    while time.time() < start:
        time.sleep(0.01)
    cpu0, wall0 = time.process_time(), time.time()  # a late starter measures less time
    cap = cv2.VideoCapture(clip, cv2.CAP_FFMPEG)
    while time.time() < start + seconds:
        if not cap.grab():
            cap.release()
            cap = cv2.VideoCapture(clip, cv2.CAP_FFMPEG)
            continue
        frames += 1
        if frames % DETECT_EVERY:
            continue
        ok, image = cap.retrieve()
        if not ok:
            continue
        result = proc.process(Frame("bench", time.time(), frames, image))
        processed += 1
        crops += len(result.crops)
    cap.release()
    return {"frames": frames, "processed": processed, "crops": crops,
            "cpu_s": time.process_time() - cpu0, "wall_s": time.time() - wall0}


def measure(clip: Path, procs: int, seconds: float) -> dict[str, float]:
    start = time.time() + 3.0  # every process imported and waiting
    with mp.get_context("spawn").Pool(procs) as pool:
        reports = pool.starmap(worker, [(str(clip), seconds, start)] * procs)
    fps = sum(r["frames"] / r["wall_s"] for r in reports)
    frames = sum(r["frames"] for r in reports)
    cpu = sum(r["cpu_s"] for r in reports)
    return {
        "procs": procs,
        "frames_per_s": round(fps, 1),
        "cameras": round(fps / STREAM_FPS, 1),
        "core_per_camera": round(cpu / (frames / STREAM_FPS), 4) if frames else float("nan"),
        "crops_per_frame_processed": round(
            sum(r["crops"] for r in reports) / max(1, sum(r["processed"] for r in reports)), 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", type=Path, help="an H.264 file (default: the pipeline bench's)")
    p.add_argument("--procs", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    clip = args.clip
    if clip is None:
        from bench.pipeline import clip_path

        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "camtrap-bench"
        clip = clip_path(cache, 10, 10)
    from camtrap.tools.benchmark import cpu_model

    rows = [measure(clip, n, args.seconds) for n in args.procs]
    if args.json:
        print(json.dumps({"machine": cpu_model(), "clip": clip.name, "rows": rows}, indent=2))
        return 0
    print(f"{cpu_model()}; {clip.name}; grab every frame, process 1 in {DETECT_EVERY}")
    print(f"{'procs':>5s} {'frames/s':>9s} {'cameras':>8s} {'core/camera':>12s} "
          f"{'crops/frame':>12s}")
    for r in rows:
        print(f"{r['procs']:5d} {r['frames_per_s']:9.1f} {r['cameras']:8.1f} "
              f"{r['core_per_camera']:12.4f} {r['crops_per_frame_processed']:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
