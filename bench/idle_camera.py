"""CPU per idle camera: a 1080p 15 fps H.264 RTSP stream at detect_fps 5, side by side with a
naive read-every-frame loop.

    python -m bench.idle_camera [--seconds 15] [--width 1920 --height 1080 --fps 15]

Needs the GStreamer RTSP test server (tests/rtsp_server.py, Debian's python3-gi). In one
process, one after the other on the same live stream:
  ours    CameraWorker (capture thread + camera thread: grab every frame, convert 5 a second,
          motion, regions, crops cut but discarded), the daemon's real path
  naive   cap.read() of every frame (decode and convert all 15 a second) and the same motion
          on each, which is what a simple OpenCV loop costs
Reported: CPU seconds per wall second of the whole process (every thread: ours, FFmpeg's
decoder threads), split per thread where Python knows the thread, and the ratio naive/ours.
The stream carries the test server's moving ball, so motion and crops run on every frame: a
quiet camera costs a little less. Target on these 2-core machines: at most 0.15 of one core.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from pathlib import Path

import cv2

from camtrap.camera import CameraWorker
from camtrap.config.models import CameraConfig, MotionConfig, RegionsConfig
from camtrap.motion.frames import FrameProcessor
from camtrap.tools.benchmark import cpu_model
from camtrap.video.capture import Frame
from camtrap.video.stream import ffmpeg_options
from tests.servers import RtspServer


def process_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def thread_cpu(native_id: int) -> float:
    """CPU seconds of one thread of this process, from /proc."""
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def python_threads(prefix: str) -> dict[str, int]:
    return {t.name: t.native_id for t in threading.enumerate()
            if t.name.startswith(prefix) and t.native_id is not None}


def measure_ours(cfg: CameraConfig, warmup: float, seconds: float) -> dict[str, object]:
    crops = [0]

    def emit(_crop: object) -> None:
        crops[0] += 1

    worker = CameraWorker(cfg, MotionConfig(), RegionsConfig(), 240, emit)
    worker.start()
    try:
        time.sleep(warmup)
        threads = {**python_threads("camera-"), **python_threads("capture-")}
        before = {name: thread_cpu(tid) for name, tid in threads.items()}
        cpu0, wall0 = process_cpu(), time.monotonic()
        seen0, done0 = worker.status.frames_seen, worker.status.frames_processed
        time.sleep(seconds)
        wall = time.monotonic() - wall0
        cpu = process_cpu() - cpu0
        per_thread = {name: (thread_cpu(tid) - before[name]) / wall
                      for name, tid in threads.items()}
        return {
            "cpu_per_wall": cpu / wall,
            "threads": per_thread,
            "stream_fps": (worker.status.frames_seen - seen0) / wall,
            "processed_fps": (worker.status.frames_processed - done0) / wall,
            "crops": crops[0],
            "reconnects": worker.status.reconnects,
        }
    finally:
        worker.stop()
        worker.join(timeout=5)


def measure_naive(cfg: CameraConfig, warmup: float, seconds: float) -> dict[str, object]:
    old = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = ffmpeg_options(cfg.url, "tcp", None) or ""
    timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
    cap = cv2.VideoCapture(cfg.url, cv2.CAP_FFMPEG, timeouts)
    if old is None:
        os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
    else:
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = old
    proc = FrameProcessor(cfg, MotionConfig(), RegionsConfig(), 240)
    stop = threading.Event()
    counts = {"frames": 0}

    def loop() -> None:
        seq = 0
        while not stop.is_set():
            ok, image = cap.read()
            if not ok:
                return
            seq += 1
            counts["frames"] += 1
            proc.process(Frame(cfg.name, time.time(), seq, image))

    thread = threading.Thread(target=loop, name="naive-read", daemon=True)
    thread.start()
    try:
        time.sleep(warmup)
        tid = thread.native_id or 0
        t0 = thread_cpu(tid)
        cpu0, wall0, n0 = process_cpu(), time.monotonic(), counts["frames"]
        time.sleep(seconds)
        wall = time.monotonic() - wall0
        return {
            "cpu_per_wall": (process_cpu() - cpu0) / wall,
            "threads": {"naive-read": (thread_cpu(tid) - t0) / wall},
            "stream_fps": (counts["frames"] - n0) / wall,
            "processed_fps": (counts["frames"] - n0) / wall,
        }
    finally:
        stop.set()
        thread.join(timeout=5)
        cap.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured, per path")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--detect-fps", type=float, default=5.0)
    args = parser.parse_args(argv)
    print(f"idle camera CPU on {cpu_model()}; OpenCV {cv2.__version__}, "
          f"{cv2.getNumThreads()} cv2 threads; load average {os.getloadavg()[0]:.2f}")
    with RtspServer("live", width=args.width, height=args.height, fps=args.fps) as server:
        cfg = CameraConfig(name="bench", url=server.url, detect_fps=args.detect_fps)
        print(f"stream: {args.width}x{args.height} {args.fps} fps H.264 over RTSP/TCP "
              f"(GStreamer test server, a separate process); detect_fps {args.detect_fps}")
        ours = measure_ours(cfg, args.warmup, args.seconds)
        naive = measure_naive(cfg, args.warmup, args.seconds)
    for name, r in (("ours", ours), ("naive", naive)):
        print(f"{name:6} {r['cpu_per_wall']:.3f} CPU s per wall s (whole process), "
              f"stream {r['stream_fps']:.1f} fps, processed {r['processed_fps']:.1f} fps")
        for thread, share in r["threads"].items():  # type: ignore[union-attr]
            print(f"         thread {thread}: {share:.3f}")
    print(f"naive/ours: {naive['cpu_per_wall'] / ours['cpu_per_wall']:.2f}x CPU; "  # type: ignore[operator]
          f"ours {ours['cpu_per_wall']:.3f} of one core (target <= 0.15)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
