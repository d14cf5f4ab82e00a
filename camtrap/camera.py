"""One camera's thread: capture -> motion -> regions -> crops into the classifier queue."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from camtrap.config.models import CameraConfig, MotionConfig, RegionsConfig, TracksConfig
from camtrap.logs import mask_text, name_os_thread
from camtrap.motion.frames import FrameProcessor
from camtrap.motion.regions import Crop
from camtrap.video.capture import Capture
from camtrap.video.status import CameraStatus
from camtrap.video.stream import Backoff

log = logging.getLogger(__name__)
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
        tracks: TracksConfig | None = None,  # None: every region's crop is classified
    ) -> None:
        super().__init__(name=f"camera-{camera.name}", daemon=True)
        self.camera = camera
        self._stop_event = threading.Event()  # the worker ends
        self._capture_stop = threading.Event()  # the current capture run ends (stop, pause)
        self._active = threading.Event()
        self._active.set()
        self.capture = Capture(camera, self._capture_stop)
        self.processor = FrameProcessor(camera, motion, regions, input_size, tracks)
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
