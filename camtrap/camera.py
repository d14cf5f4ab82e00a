"""One camera's thread: capture -> motion -> regions -> crops into the classifier queue."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from camtrap.capture import Backoff, CameraStatus, Capture, Frame
from camtrap.config import CameraConfig, MotionConfig, RegionsConfig
from camtrap.logs import mask_text, name_os_thread
from camtrap.motion import MotionDetector, MotionResult
from camtrap.regions import Box, Crop, cut_crop, plan_regions, scale_boxes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameResult:
    frame: Frame
    motion: MotionResult  # boxes in full-resolution (main stream) pixels
    regions: list[Box]  # square regions in full-resolution pixels
    crops: list[Crop]


def effective_motion(camera: CameraConfig, motion: MotionConfig) -> MotionConfig:
    """The `motion` section with the camera's own overrides (only the keys it sets)."""
    if camera.motion is None:
        return motion
    return motion.model_copy(update=camera.motion.model_dump(exclude_unset=True))


def effective_regions(camera: CameraConfig, regions: RegionsConfig) -> RegionsConfig:
    """The `regions` section with the camera's own overrides (only the keys it sets)."""
    if camera.regions is None:
        return regions
    return regions.model_copy(update=camera.regions.model_dump(exclude_unset=True))


class FrameProcessor:
    """Pure per-frame work shared by the live camera thread and `camtrap replay`.

    Motion runs on `frame.image` (the detect stream's frame when there is one); its boxes are
    mapped to the main stream's pixels, and crops are cut from the main stream's frame, which
    is converted only when there is something to cut.
    """

    def __init__(
        self, camera: CameraConfig, motion: MotionConfig, regions: RegionsConfig, input_size: int
    ) -> None:
        self.camera = camera
        self.motion_cfg = effective_motion(camera, motion)
        self.regions_cfg = effective_regions(camera, regions)
        self.input_size = input_size
        masks = [[(float(x), float(y)) for x, y in m] for m in camera.masks]
        self.detector = MotionDetector(self.motion_cfg, masks)
        self.crops_from_detect = 0  # crops cut from the detect frame: main stream had none

    def process(self, frame: Frame) -> FrameResult:
        motion = self.detector.detect(frame.image, frame.ts)
        dh, dw = frame.image.shape[:2]
        fw, fh = frame.size
        if (fw, fh) != (dw, dh):
            boxes = scale_boxes(motion.boxes, fw / dw, fh / dh, (fw, fh))
            motion = dataclasses.replace(motion, boxes=boxes)
        regions = plan_regions(motion.boxes, fw, fh, self.regions_cfg)
        crops = self._crops(frame, regions) if regions else []
        return FrameResult(frame, motion, regions, crops)

    def _crops(self, frame: Frame, regions: list[Box]) -> list[Crop]:
        fw, fh = frame.size
        source: np.ndarray | None = frame.full_image()
        cut = regions
        if source is None or source.shape[:2] != (fh, fw):
            # The main stream has no frame right now: cut from the detect frame instead,
            # and still report the regions in main-stream pixels.
            source = frame.image
            dh, dw = source.shape[:2]
            cut = scale_boxes(regions, dw / fw, dh / fh, (dw, dh))
            self.crops_from_detect += len(regions)
        return [
            Crop(
                camera=frame.camera,
                ts=frame.ts,
                frame_seq=frame.seq,
                box=region,
                frame_size=(fw, fh),
                image=cut_crop(source, c, self.input_size),
            )
            for region, c in zip(regions, cut, strict=True)
        ]


class CameraWorker(threading.Thread):
    """Runs until `stop()`. A failing camera retries forever and never touches the others: an
    unexpected error in this camera's processing is logged and the camera restarted after a
    backoff, rather than ending the thread (which would make the whole daemon unhealthy)."""

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
        self._stop_event = threading.Event()  # the worker ends
        self._capture_stop = threading.Event()  # the current capture run ends (stop, pause)
        self._active = threading.Event()
        self._active.set()
        self.capture = Capture(camera, self._capture_stop)
        self.processor = FrameProcessor(camera, motion, regions, input_size)
        self.emit = emit
        self._progress = time.monotonic()
        self.crops_emitted = 0
        self.errors = 0

    @property
    def status(self) -> CameraStatus:
        return self.capture.status

    @property
    def last_progress(self) -> float:
        """When this camera's thread last turned (a frame, or a supervision tick)."""
        return max(self._progress, self.capture.last_progress)

    def set_active(self, active: bool, describe: str | None = None) -> None:
        """Pause the camera (outside its active hours: streams closed, nothing decoded) or
        resume it. May be called before `start()`."""
        self.status.active_hours = describe
        if active == self._active.is_set():
            return
        if active:
            self._active.set()
        else:
            self._active.clear()
            self._capture_stop.set()
        log.info("camera %s: %s", self.camera.name, describe or ("active" if active else "paused"))

    def _wait_while_paused(self) -> None:
        while not self._active.is_set() and not self._stop_event.is_set():
            self.status.state, self.status.connected = "paused", False
            self._progress = time.monotonic()
            self._active.wait(1.0)

    def run(self) -> None:
        name_os_thread()
        backoff = Backoff(self.camera.reconnect_min_s, self.camera.reconnect_max_s)
        try:
            while not self._stop_event.is_set():
                self._wait_while_paused()
                if self._stop_event.is_set():
                    return
                self._capture_stop.clear()
                try:
                    for frame in self.capture.frames():
                        for crop in self.processor.process(frame).crops:
                            self.emit(crop)
                            self.crops_emitted += 1
                        self._progress = time.monotonic()
                    if not self._capture_stop.is_set() or self._stop_event.is_set():
                        return  # a file that does not loop has ended, or stopped
                    self.processor.detector.reset()  # paused: the scene will have changed
                except Exception as exc:
                    self.errors += 1
                    delay = backoff.next_delay()
                    log.exception(
                        "camera %s: processing failed; restarting it in %.1f s",
                        self.camera.name,
                        delay,
                    )
                    self.status.state = "failed"
                    self.status.last_error = mask_text(f"camera {self.camera.name}: {exc!r}")
                    self.processor.detector.reset()
                    self._stop_event.wait(delay)
        finally:
            self.status.connected = False
            if self.status.state != "finished":
                self.status.state = "stopped"

    def stop(self) -> None:
        self._stop_event.set()
        self._capture_stop.set()
        self._active.set()  # wakes a paused worker so that it can end
