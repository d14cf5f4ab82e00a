"""Frames from a camera (RTSP, HTTP MJPEG/HLS, a video file, a V4L2 device) at `detect_fps`.

The camera thread (`Capture.frames`) asks its stream reader for one frame at a time. With a
`detect_url`, motion runs on that small stream and the main stream's full-resolution frame
is converted only when a crop is cut from it. Files are read in step with their own clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from camtrap.config.models import CameraConfig
from camtrap.logs import mask_url
from camtrap.video.status import CameraStatus, StreamStatus
from camtrap.video.stream import StreamReader, _file_fps, open_capture

log = logging.getLogger(__name__)

POLL_S = 0.25  # the camera thread's supervision tick while it waits for a frame


@dataclass(frozen=True, eq=False)
class Frame:
    """One looked-at frame. `image` is what motion runs on: the detect stream's frame when the
    camera has one, else the main stream's. `full()` fetches the main stream's frame of (about)
    the same moment, converted only on demand; call it before asking for the next frame."""

    camera: str
    ts: float  # wall-clock seconds (epoch) when the frame was taken: for stamps
    seq: int
    image: np.ndarray  # BGR uint8
    full: Callable[[], np.ndarray | None] | None = None
    full_size: tuple[int, int] | None = None  # (width, height) of the main stream
    mono: float | None = None  # monotonic seconds, for durations; None: `ts` is one (files)

    @property
    def clock(self) -> float:
        """Seconds that never jump: what motion, visits and timeouts measure with. A wall
        clock set by NTP or by hand can move by hours; this cannot."""
        return self.ts if self.mono is None else self.mono

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frame crops are cut from, the pixels boxes are given in."""
        if self.full_size is not None:
            return self.full_size
        h, w = self.image.shape[:2]
        return (w, h)

    def full_image(self) -> np.ndarray | None:
        """The full-resolution frame (None if the main stream has none right now)."""
        return self.image if self.full is None else self.full()


class _FileStream:
    """A video file read in step with its own clock, for replay (no threads, no pacing)."""

    def __init__(self, url: str, cfg: CameraConfig) -> None:
        self.cap = open_capture(url, cfg)
        self.fps = _file_fps(self.cap)
        self.grabbed = 0
        self.ended = False
        self.size = (
            int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )

    @property
    def clock(self) -> float:
        """Video time of the frame grabbed last."""
        return (self.grabbed - 1) / self.fps

    def grab(self) -> bool:
        if self.ended or not self.cap.grab():
            self.ended = True
            return False
        self.grabbed += 1
        return True

    def advance_to(self, t: float) -> None:
        """Grab up to the frame nearest to video time `t`."""
        # The next frame's time is grabbed / fps: take it while it is nearer to t.
        while not self.ended and (self.grabbed == 0 or (self.grabbed - 0.5) / self.fps <= t):
            self.grab()

    def retrieve(self) -> np.ndarray | None:
        if self.grabbed == 0:
            return None
        ok, image = self.cap.retrieve()
        return image if ok else None

    def release(self) -> None:
        self.cap.release()


def _once(fetch: Callable[[], np.ndarray | None]) -> Callable[[], np.ndarray | None]:
    """Fetch at most once, however often called (a frame's full image)."""
    cache: list[np.ndarray | None] = []

    def get() -> np.ndarray | None:
        if not cache:
            cache.append(fetch())
        return cache[0]

    return get


class Capture:
    """Yields frames of one camera at `detect_fps`, reconnecting for as long as it runs.

    `realtime=False` (replay) reads a file as fast as possible, in step with the video's own
    clock, and stamps frames with it starting at `start_ts`; it ends at the end of the file
    and raises CaptureError if the file cannot be opened.
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
        self.status = CameraStatus(url=mask_url(cfg.detect_url or cfg.url))
        if cfg.detect_url:
            self.status.main = StreamStatus(url=mask_url(cfg.url))
        self.last_progress = time.monotonic()  # moves while the camera thread turns
        self._seq = 0

    def frames(self) -> Iterator[Frame]:
        if self.realtime:
            yield from self._live_frames()
        else:
            yield from self._file_frames()

    def _live_frames(self) -> Iterator[Frame]:
        cfg, status = self.cfg, self.status
        period = 1.0 / cfg.detect_fps
        detect = StreamReader(
            cfg, cfg.detect_url or cfg.url, "detect" if cfg.detect_url else "main", status,
            self.stop, period=period,
        )
        main = None
        if cfg.detect_url and status.main is not None:
            main = StreamReader(cfg, cfg.url, "main", status.main, self.stop, period=0.0)
        readers = [r for r in (detect, main) if r is not None]
        for reader in readers:
            reader.start()
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                self.last_progress = now
                for reader in readers:
                    reader.check(now)
                got = detect.next_frame(POLL_S)
                if got is None:
                    if detect.finished:
                        return
                    continue
                image, ts, mono = got
                self._seq += 1
                status.note_processed(time.monotonic())
                full, full_size = None, None
                if main is not None:
                    full, full_size = self._main_fetch(main)
                yield Frame(cfg.name, ts, self._seq, image, full, full_size, mono)
        finally:
            for reader in readers:
                reader.close()
            status.connected = False
            if status.main is not None:
                status.main.connected = False

    def _main_fetch(
        self, main: StreamReader
    ) -> tuple[Callable[[], np.ndarray | None] | None, tuple[int, int] | None]:
        """The main stream's frame as a lazy fetch, if its size is known; else crops come
        from the detect frame itself."""
        st = main.status
        if not st.connected or not st.width or not st.height:
            return None, None
        wait = max(0.5, 3 * (main._interval or 0.0))
        return _once(lambda: main.fetch(wait)), (st.width, st.height)

    def _file_frames(self) -> Iterator[Frame]:
        cfg, status = self.cfg, self.status
        detect = _FileStream(cfg.detect_url or cfg.url, cfg)
        main: _FileStream | None = None
        try:
            if cfg.detect_url:
                main = _FileStream(cfg.url, cfg)
            status.connected, status.state = True, "streaming"
            period = 1.0 / cfg.detect_fps
            next_due = 0.0
            while not self.stop.is_set() and detect.grab():
                now = time.monotonic()
                self.last_progress = now
                status.note_frame(now)
                clock = detect.clock
                if clock + 1e-6 < next_due:
                    continue  # grabbed, never converted
                next_due = max(next_due + period, clock)
                image = detect.retrieve()
                if image is None:
                    break
                full, full_size = None, None
                if main is not None:
                    main.advance_to(clock)
                    full, full_size = _once(main.retrieve), main.size
                self._seq += 1
                status.note_processed(time.monotonic())
                yield Frame(cfg.name, self.start_ts + clock, self._seq, image, full, full_size)
            status.state = "finished"
        finally:
            status.connected = False
            detect.release()
            if main is not None:
                main.release()
