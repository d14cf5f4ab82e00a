"""Frames from a camera (RTSP, HTTP, a file, a V4L2 device) that never stays down.

Every `VideoCapture` gets open and read timeouts (without them a hung server blocks a read
for 30 s or more). A capture whose read failed is dead: release it and reopen with an
exponential backoff with jitter, reset after a healthy stretch. Frames are handed on at
`detect_fps` with latest-frame semantics: every frame is grabbed (so no latency builds up)
but only the ones due are decoded to BGR.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import cv2
import numpy as np

from camtrap.config import CameraConfig
from camtrap.logs import mask_url

log = logging.getLogger(__name__)

_ENV_LOCK = threading.Lock()  # OPENCV_FFMPEG_CAPTURE_OPTIONS is process-global, read at open
HEALTHY_RESET_S = 60.0


@dataclass(frozen=True, eq=False)
class Frame:
    camera: str
    ts: float  # wall-clock seconds (epoch) when the frame was taken
    seq: int
    image: np.ndarray  # BGR uint8


@dataclass
class CameraStatus:
    """Live per-camera figures, written by the camera thread, read by health and stats."""

    connected: bool = False
    state: str = "starting"
    frames_seen: int = 0
    frames_processed: int = 0
    reconnects: int = 0
    last_frame_monotonic: float | None = None
    last_error: str | None = None
    _seen_times: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    _processed_times: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    _reconnect_times: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    @staticmethod
    def _rate(times: deque[float]) -> float:
        if len(times) < 2 or time.monotonic() - times[-1] > 5:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-6)

    @property
    def stream_fps(self) -> float:
        return self._rate(self._seen_times)

    @property
    def processed_fps(self) -> float:
        return self._rate(self._processed_times)

    def reconnects_last_hour(self) -> int:
        cutoff = time.monotonic() - 3600
        return sum(1 for t in self._reconnect_times if t >= cutoff)

    def last_frame_age(self) -> float | None:
        if self.last_frame_monotonic is None:
            return None
        return time.monotonic() - self.last_frame_monotonic

    def as_dict(self) -> dict[str, object]:
        age = self.last_frame_age()
        return {
            "state": self.state,
            "connected": self.connected,
            "stream_fps": round(self.stream_fps, 2),
            "processed_fps": round(self.processed_fps, 2),
            "reconnects_last_hour": self.reconnects_last_hour(),
            "last_frame_age_s": None if age is None else round(age, 2),
            "last_error": self.last_error,
        }


class Backoff:
    """Exponential delay with jitter: 1 s doubling to 60 s, so a dead camera costs nothing."""

    def __init__(self, initial: float = 1.0, maximum: float = 60.0, jitter: float = 0.2) -> None:
        self.initial, self.maximum, self.jitter = initial, maximum, jitter
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next * (1 + random.uniform(-self.jitter, self.jitter))
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


def source_kind(url: str) -> str:
    if url.isdigit():
        return "device"
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("", "file"):
        return "file"
    return "stream"


def file_path(url: str) -> str:
    return urlsplit(url).path if url.startswith("file:") else url


def open_capture(cfg: CameraConfig) -> cv2.VideoCapture:
    """Open the camera's source with timeouts; raise OSError naming the (masked) URL."""
    kind = source_kind(cfg.url)
    if kind == "device":
        cap = cv2.VideoCapture(int(cfg.url), cv2.CAP_V4L2)
    else:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(cfg.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(cfg.read_timeout_s * 1000),
        ]
        target = file_path(cfg.url) if kind == "file" else cfg.url
        with _ENV_LOCK:
            previous = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
            if urlsplit(cfg.url).scheme.lower().startswith("rtsp"):
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = (
                    f"rtsp_transport;{cfg.transport}|analyzeduration;0|probesize;32"
                )
            else:
                os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
            try:
                cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
            finally:
                if previous is None:
                    os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                else:
                    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = previous
    if not cap.isOpened():
        cap.release()
        raise OSError(f"camera {cfg.name}: cannot open {mask_url(cfg.url)}")
    return cap


class Capture:
    """Yields frames of one camera at `detect_fps`, reconnecting for as long as it runs.

    `realtime=False` (replay) reads a file as fast as possible and stamps frames with the
    video's own clock starting at `start_ts`; it ends at the end of the file.
    """

    def __init__(
        self,
        cfg: CameraConfig,
        stop: threading.Event,
        *,
        realtime: bool = True,
        start_ts: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.stop = stop
        self.realtime = realtime
        self.start_ts = time.time() if start_ts is None else start_ts
        self.status = CameraStatus()
        self.backoff = Backoff()
        self._seq = 0

    def frames(self) -> Iterator[Frame]:
        kind = source_kind(self.cfg.url)
        while not self.stop.is_set():
            try:
                cap = open_capture(self.cfg)
            except OSError as exc:
                self._failed(str(exc))
                continue
            self.status.connected, self.status.state = True, "streaming"
            log.info("camera %s: opened %s", self.cfg.name, mask_url(self.cfg.url))
            try:
                ended = yield from self._read(cap, kind)
            finally:
                cap.release()
                self.status.connected = False
            if kind == "file" and ended and (not self.realtime or not self.cfg.loop):
                self.status.state = "finished"
                return
            if not ended:
                self._failed(f"camera {self.cfg.name}: read failed or timed out")

    def _failed(self, reason: str) -> None:
        self.status.state, self.status.last_error = "reconnecting", reason
        delay = self.backoff.next_delay()
        log.warning("%s; retrying in %.1f s", reason, delay)
        self.status.reconnects += 1
        self.status._reconnect_times.append(time.monotonic())
        self.stop.wait(delay)

    def _read(self, cap: cv2.VideoCapture, kind: str) -> Iterator[Frame]:
        """Grab frames until the stream fails (returns False) or a file ends (True)."""
        period = 1.0 / self.cfg.detect_fps
        opened = time.monotonic()
        file_fps = cap.get(cv2.CAP_PROP_FPS) if kind == "file" else 0.0
        if not file_fps or file_fps != file_fps or file_fps > 240:
            file_fps = 25.0
        grabbed = 0
        next_due = 0.0
        while not self.stop.is_set():
            if not cap.grab():
                return kind == "file" and grabbed > 0
            now = time.monotonic()
            grabbed += 1
            self.status.frames_seen += 1
            self.status._seen_times.append(now)
            self.status.last_frame_monotonic = now
            if now - opened > HEALTHY_RESET_S:
                self.backoff.reset()
            if kind == "file":
                clock = (grabbed - 1) / file_fps
                if self.realtime:
                    ahead = opened + clock - now
                    if ahead > 0 and self.stop.wait(ahead):
                        return True
            else:
                clock = now - opened
            if clock + 1e-6 < next_due:
                continue
            next_due = max(next_due + period, clock)
            ok, image = cap.retrieve()
            if not ok or image is None:
                return False
            ts = self.start_ts + clock if not self.realtime else time.time()
            self._seq += 1
            self.status.frames_processed += 1
            self.status._processed_times.append(time.monotonic())
            yield Frame(self.cfg.name, ts, self._seq, image)
        return True
