"""One camera's thread: capture -> motion -> regions -> crops into the classifier queue."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from camtrap.capture import CameraStatus, Capture, Frame
from camtrap.config import CameraConfig, MotionConfig, RegionsConfig
from camtrap.motion import MotionDetector, MotionResult
from camtrap.regions import Box, Crop, cut_crop, plan_regions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameResult:
    frame: Frame
    motion: MotionResult
    regions: list[Box]
    crops: list[Crop]


class FrameProcessor:
    """Pure per-frame work shared by the live camera thread and `camtrap replay`."""

    def __init__(
        self, camera: CameraConfig, motion: MotionConfig, regions: RegionsConfig, input_size: int
    ) -> None:
        self.camera = camera
        self.regions_cfg = regions
        self.input_size = input_size
        self.detector = MotionDetector(motion, [list(map(tuple, m)) for m in camera.masks])

    def process(self, frame: Frame) -> FrameResult:
        motion = self.detector.detect(frame.image)
        h, w = frame.image.shape[:2]
        regions = plan_regions(motion.boxes, w, h, self.regions_cfg)
        crops = [
            Crop(
                camera=frame.camera,
                ts=frame.ts,
                frame_seq=frame.seq,
                box=region,
                frame_size=(w, h),
                image=cut_crop(frame.image, region, self.input_size),
            )
            for region in regions
        ]
        return FrameResult(frame, motion, regions, crops)


class CameraWorker(threading.Thread):
    """Runs until `stop()`; a failing camera retries forever and never touches the others."""

    def __init__(
        self,
        camera: CameraConfig,
        motion: MotionConfig,
        regions: RegionsConfig,
        input_size: int,
        emit: Callable[[Crop], None],
    ) -> None:
        super().__init__(name=f"camera-{camera.name}", daemon=True)
        self.camera = camera
        self._stop_event = threading.Event()
        self.capture = Capture(camera, self._stop_event)
        self.processor = FrameProcessor(camera, motion, regions, input_size)
        self.emit = emit
        self.last_progress = time.monotonic()
        self.crops_emitted = 0

    @property
    def status(self) -> CameraStatus:
        return self.capture.status

    def run(self) -> None:
        try:
            for frame in self.capture.frames():
                self.last_progress = time.monotonic()
                for crop in self.processor.process(frame).crops:
                    self.emit(crop)
                    self.crops_emitted += 1
        except Exception:
            log.exception("camera %s: thread failed", self.camera.name)
            self.status.state = "failed"
            raise
        finally:
            self.status.connected = False
            if self.status.state != "finished":
                self.status.state = "stopped"

    def stop(self) -> None:
        self._stop_event.set()
