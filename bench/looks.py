"""The look sampler's effect on the classifier's load: the same clip replayed with tracks off
(every region's crop classified, as before) and on, side by side.

The clip is synthetic (numpy, written with OpenCV at 5 fps, 640x360): a textured
background; a bird-sized dark ellipse that sits a minute, shifting a few pixels every
frame (a bird at the feeder, always "moving"); later one that hops across the frame for
15 s; later two that sit side by side for 30 s. The classifier is a stand-in that answers
"Great Tit" for every crop: this measures forward passes, visits and when the first event
comes, not accuracy (recall on real foliage needs real footage; see the report).

    .venv/bin/python bench/looks.py [--out looks.json]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from camtrap.config.models import Config
from camtrap.inference.backend import TopK
from camtrap.replay import REPLAY_EPOCH, replay

FPS = 5
W, H = 640, 360
LABELS = ["Great Tit", "House Sparrow", "Eurasian Hoopoe"]
# (name, arrive s, leave s): the birds' time in view, by video time
SEGMENTS = [("sits a minute", 10.0, 70.0), ("hops across", 110.0, 125.0),
            ("two sit together", 165.0, 195.0)]
LENGTH_S = 230.0


class GreatTitBackend:
    """Counts forward passes; every crop is a confident Great Tit."""

    input_size = 240
    max_batch = 16
    max_in_flight = 1
    embedding_size = None
    labels = LABELS

    def __init__(self) -> None:
        self.images = 0

    def submit(self, images: np.ndarray) -> _Done:
        self.images += len(images)
        n = len(images)
        probs = np.tile(np.array([[0.9, 0.05]], np.float32), (n, 1))
        return _Done(TopK(probs, np.tile(np.array([[0, 1]], np.int64), (n, 1))))

    def warm_up(self, batch_sizes: Iterable[int]) -> float:
        return 0.0


class _Done:
    def __init__(self, top: TopK) -> None:
        self.top = top

    def result(self) -> TopK:
        return self.top


def bird(img: np.ndarray, cx: float, cy: float) -> None:
    cv2.ellipse(img, (round(cx), round(cy)), (22, 15), 0, 0, 360, (40, 50, 60), -1)
    cv2.circle(img, (round(cx) + 16, round(cy) - 10), 8, (30, 35, 40), -1)  # head


def make_clip(path: Path) -> Path:
    rng = np.random.default_rng(7)
    noise = rng.integers(90, 170, (H // 8, W // 8, 3), dtype=np.uint8)
    background = cv2.resize(noise, (W, H), interpolation=cv2.INTER_CUBIC)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    for i in range(int(LENGTH_S * FPS)):
        t = i / FPS
        img = background.copy()
        jitter = (rng.integers(-3, 4), rng.integers(-2, 3))
        if SEGMENTS[0][1] <= t < SEGMENTS[0][2]:
            bird(img, 300 + jitter[0], 180 + jitter[1])
        if SEGMENTS[1][1] <= t < SEGMENTS[1][2]:
            bird(img, 60 + (t - SEGMENTS[1][1]) * 34, 120 + 20 * np.sin(t * 3))
        if SEGMENTS[2][1] <= t < SEGMENTS[2][2]:
            bird(img, 200 + jitter[0], 200 + jitter[1])
            bird(img, 440 - jitter[1], 190 + jitter[0])
        writer.write(img)
    writer.release()
    return path


def stamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() - REPLAY_EPOCH


def run(video: Path, tracks: bool) -> dict[str, object]:
    cfg = Config.model_validate({
        "cameras": [{"name": "feeder", "url": str(video), "detect_fps": FPS}],
        "tracks": {"enabled": tracks},
    })
    backend = GreatTitBackend()
    out, regions = io.StringIO(), io.StringIO()
    cpu = time.process_time()
    stats = replay(cfg, backend, video, out, regions)  # type: ignore[arg-type]
    cpu = time.process_time() - cpu
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    frames = [json.loads(line) for line in regions.getvalue().splitlines()]
    starts = [e for e in events if e["type"] == "start"]
    ends = {e["visit_id"]: e for e in events if e["type"] == "end"}
    per_segment = []
    for name, arrive, leave in SEGMENTS:
        inside = [f for f in frames if arrive <= f["time_s"] < leave + 1]
        visits = [s for s in starts if arrive - 1 <= stamp(s["start_time"]) < leave + 1]
        first = min((stamp(s["last_seen"]) for s in visits), default=None)
        end = ends.get(visits[0]["visit_id"]) if visits else None
        per_segment.append({
            "segment": name,
            "seconds": leave - arrive,
            "regions": sum(len(f["regions"]) for f in inside),
            "forward_passes": sum(sum(f["classified"]) for f in inside),
            "visits": len(visits),
            "first_event_after_s": None if first is None else round(first - arrive, 2),
            "count": end.get("count") if end else None,
        })
    return {
        "tracks": tracks,
        "frames": stats.frames,
        "regions": stats.regions,
        "forward_passes": backend.images,
        "visits": len(starts),
        "replay_cpu_s": round(cpu, 2),
        "segments": per_segment,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        video = make_clip(Path(tmp) / "feeder.avi")
        runs = [run(video, tracks=False), run(video, tracks=True)]
    off, on = runs
    print("| segment | regions | passes off | passes on | load / | visits off / on "
          "| first event off / on (s) | count on |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for a, b in zip(off["segments"], on["segments"], strict=True):  # type: ignore[call-overload]
        ratio = a["forward_passes"] / max(1, b["forward_passes"])
        print(f"| {a['segment']} ({a['seconds']:.0f} s) | {a['regions']} | {a['forward_passes']}"
              f" | {b['forward_passes']} | {ratio:.1f}x | {a['visits']} / {b['visits']}"
              f" | {a['first_event_after_s']} / {b['first_event_after_s']} | {b['count']} |")
    print(f"| whole clip ({LENGTH_S:.0f} s, {off['frames']} frames) | {off['regions']}"
          f" | {off['forward_passes']} | {on['forward_passes']}"
          f" | {off['forward_passes'] / max(1, on['forward_passes']):.1f}x"  # type: ignore[operator]
          f" | {off['visits']} / {on['visits']} | | |")
    print(f"replay CPU s (stand-in classifier): off {off['replay_cpu_s']}, on {on['replay_cpu_s']}",
          file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
