"""`camtrap replay`: a video file processed as a camera, as fast as it can be read.

The same frame processing, classifier and visit rules as the daemon, with the video's own
clock, so a clip gives the same visits every time. Users tune masks and thresholds with it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from camtrap.comms.payloads import event_body, to_json
from camtrap.config.models import Config
from camtrap.inference.backend import Backend, classify
from camtrap.motion.frames import FrameProcessor, FrameResult
from camtrap.motion.regions import Crop
from camtrap.timeutil import resolve_tz
from camtrap.video.capture import Capture
from camtrap.visits.tracker import VisitEvent, VisitTracker

REPLAY_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: stable times, stable visit ids


@dataclass
class ReplayStats:
    frames: int = 0
    frames_with_motion: int = 0
    regions: int = 0
    crops: int = 0  # classified: with tracks, only the looks worth taking
    events: int = 0

    def __str__(self) -> str:
        return (
            f"{self.frames} frames, {self.frames_with_motion} with motion, "
            f"{self.regions} regions, {self.crops} crops classified, {self.events} visit events"
        )


def regions_line(result: FrameResult, start_ts: float) -> str:
    return json.dumps(
        {
            "frame": result.frame.seq,
            "time_s": round(result.frame.ts - start_ts, 3),
            "changed": round(result.motion.changed, 4),
            "recalibrated": result.motion.recalibrated,
            "motion": [list(b) for b in result.motion.boxes],
            "regions": [list(b) for b in result.regions],
            # in the regions' order: the track of each, and whether its look was classified
            "tracks": list(result.track_ids),
            "classified": list(result.classified),
        }
    )


def replay(
    cfg: Config,
    backend: Backend,
    video: Path,
    out: IO[str],
    regions_out: IO[str] | None = None,
    camera: str | None = None,
) -> ReplayStats:
    cams = {c.name: c for c in cfg.cameras}
    if camera is not None and camera not in cams:
        raise ValueError(f"--camera {camera!r}: no such camera (have {', '.join(cams)})")
    cam_cfg = cams[camera] if camera else cfg.cameras[0]
    cam_cfg = cam_cfg.model_copy(
        update={"url": str(video.resolve()), "detect_url": None, "loop": False}
    )
    tracker = VisitTracker(cfg.visits, backend.labels, cfg.storage.jpeg_quality, cfg.tracks)
    processor = FrameProcessor(cam_cfg, cfg.motion, cfg.regions, backend.input_size, cfg.tracks)
    capture = Capture(cam_cfg, threading.Event(), realtime=False, start_ts=REPLAY_EPOCH)
    tz = resolve_tz(cfg.schedule.timezone)
    stats = ReplayStats()
    pending: list[Crop] = []

    def emit(events: list[VisitEvent]) -> None:
        for ev in events:
            out.write(to_json(event_body(ev, tz, "replay")).decode() + "\n")
            stats.events += 1

    def classify_pending() -> None:
        for pred in classify(backend, pending):
            emit(tracker.observe(pred))
        pending.clear()

    for frame in capture.frames():
        result = processor.process(frame)
        stats.frames += 1
        stats.frames_with_motion += bool(result.motion.boxes)
        stats.regions += len(result.regions)
        stats.crops += len(result.crops)
        if regions_out is not None:
            regions_out.write(regions_line(result, REPLAY_EPOCH) + "\n")
        pending.extend(result.crops)
        if len(pending) >= cfg.batching.max_size or not result.crops:
            classify_pending()
        if not pending:  # end visits only once every earlier crop has been seen
            emit(tracker.tick(frame.clock))
    classify_pending()
    emit(tracker.flush())
    return stats
