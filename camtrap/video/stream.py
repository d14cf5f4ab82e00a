"""One stream read on its own thread, so no latency builds up however slow the consumer is.

`StreamReader` grabs every frame as it arrives and converts to BGR only the frames someone
asked for. How OpenCV's FFmpeg backend fails, measured here (see also FACTS.md):
- a killed server: grab() returns False within milliseconds; the capture is dead;
- a hung server (SIGSTOP): each grab() blocks for the read timeout and returns True once or
  twice (frames flushed out of the decoder, not new ones), then False; the capture is dead;
- a server that accepts and never answers: the open returns False after the open timeout.
- OpenCV runs one open at a time in the whole process (a file's too): a hanging camera
  delays another camera's reopen by up to its open timeout, never its reads.
So a grab that took about the read timeout does not count as a fresh frame, and no fresh
frame for `stale_after_s` (longer for a stream that is slow by nature) is a stall: release
and reopen. A call that blocks far past its timeout (a driver that ignores it) is left
behind on its thread, which releases its capture whenever the call returns, and a new reader
takes over. Reopening backs off exponentially with jitter and resets after a healthy stretch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import cv2
import numpy as np

from camtrap.config.models import CameraConfig
from camtrap.logs import mask_url, name_os_thread
from camtrap.video.status import StreamStatus

log = logging.getLogger(__name__)

HEALTHY_RESET_S = 60.0  # streaming this long resets the reconnect backoff
FRESH_FRACTION = 0.8  # a grab that took this share of the read timeout returned no new frame
SLOW_STREAM_FACTOR = 3.0  # a stream is stale after this many of its own frame intervals...
SLOW_STREAM_CAP_S = 60.0  # ...but never later than this (when above stale_after_s)
RTSP_OPTIONS = "rtsp_transport;{transport}|analyzeduration;0|probesize;32"
class CaptureError(OSError):
    """A source that cannot be opened or read (raised only when nothing retries: replay)."""


class Backoff:
    """Exponential delay with jitter (1 s doubling to 60 s by default): a dead camera costs
    nothing, and cameras that failed together do not retry in lockstep."""

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
    """`device` (a V4L2 index), `file` (a path or file:// URL) or `stream` (network)."""
    if url.isdigit():
        return "device"
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("", "file"):
        return "file"
    return "stream"


def file_path(url: str) -> str:
    return urlsplit(url).path if url.startswith("file:") else url


def ffmpeg_options(url: str, transport: str, configured: str | None) -> str | None:
    """OPENCV_FFMPEG_CAPTURE_OPTIONS for this source; None leaves it unset.

    For RTSP the tiny probe cuts an open from about 2 s to 0.2 s (FACTS.md); other sources
    keep FFmpeg's defaults (an MJPEG or HLS stream may need a real probe).
    """
    if configured is not None:
        return configured or None
    if urlsplit(url).scheme.lower().startswith("rtsp"):
        return RTSP_OPTIONS.format(transport=transport)
    return None


class _CaptureOptions:
    """OPENCV_FFMPEG_CAPTURE_OPTIONS is process-global and read at every open: it is set only
    while no open that needs another value is under way. (OpenCV itself runs one FFmpeg open
    at a time, process-wide: a hanging camera delays another camera's open by up to its open
    timeout, measured here; reads of open streams are not affected.)"""

    VAR = "OPENCV_FFMPEG_CAPTURE_OPTIONS"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value: str | None = None
        self._users = 0

    @contextlib.contextmanager
    def use(self, value: str | None) -> Iterator[None]:
        with self._cond:
            while self._users and self._value != value:
                self._cond.wait()
            if self._users == 0:
                self._value = value
                if value is None:
                    os.environ.pop(self.VAR, None)
                else:
                    os.environ[self.VAR] = value
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if self._users == 0:
                    self._cond.notify_all()


_OPTIONS = _CaptureOptions()


def open_capture(url: str, cfg: CameraConfig) -> cv2.VideoCapture:
    """Open one source with open and read timeouts; raise CaptureError naming the masked URL."""
    kind = source_kind(url)
    if kind == "device":
        cap = cv2.VideoCapture(int(url), cv2.CAP_V4L2)
    else:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(cfg.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(cfg.read_timeout_s * 1000),
        ]
        target = file_path(url) if kind == "file" else url
        with _OPTIONS.use(ffmpeg_options(url, cfg.transport, cfg.ffmpeg_options)):
            cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        raise CaptureError(f"camera {cfg.name}: cannot open {mask_url(url)}")
    return cap


def _file_fps(cap: cv2.VideoCapture) -> float:
    fps = cap.get(cv2.CAP_PROP_FPS)
    return fps if 0 < fps <= 240 else 25.0  # NaN and nonsense fail the test


class StreamReader:
    """Reads one source on its own thread until closed, reopening it whenever it fails.

    `period` > 0 (the motion stream): `next_frame()` hands out at most one frame per period,
    the newest one. `period` = 0 (the main stream beside a detect stream): `fetch()` converts
    the next grabbed frame, on demand only. Everything a superseded thread does after its
    blocking call returns is dropped (generation check), so it cannot touch the new reader's
    figures or hand out an old frame.
    """

    def __init__(
        self,
        cfg: CameraConfig,
        url: str,
        role: str,
        status: StreamStatus,
        stop: threading.Event,
        *,
        period: float,
    ) -> None:
        self.cfg = cfg
        self.url = url
        self.role = role
        self.kind = source_kind(url)
        self.status = status
        self.stop = stop
        self.period = period
        self.backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self.finished = False  # a file that ended and does not loop
        self._cond = threading.Condition()
        self._gen = 0
        self._want = False
        self._slot: tuple[np.ndarray, float, float] | None = None
        self._next_due = 0.0
        self._interval: float | None = None  # moving average of seconds between fresh frames
        self._busy: tuple[float, float, str] | None = None  # (since, limit, what) of a call
        self._closed = False

    # ---- consumer side (the camera thread)

    def start(self) -> None:
        self._spawn(after_failure=False)

    def close(self) -> None:
        """Stop reading; the thread releases its capture when its current call returns."""
        with self._cond:
            self._closed = True
            self._gen += 1
            self._cond.notify_all()

    def next_frame(self, timeout: float) -> tuple[np.ndarray, float, float] | None:
        """The newest frame once one is due: (BGR, wall-clock ts, monotonic ts), or None
        after `timeout`."""
        with self._cond:
            self._want = True
            if self._slot is None:
                self._cond.wait_for(lambda: self._slot is not None or self.finished, timeout)
            slot, self._slot = self._slot, None
            return slot

    def fetch(self, timeout: float) -> np.ndarray | None:
        """The next frame grabbed from now on, converted; None if the stream has none."""
        if not self.status.connected:
            return None
        with self._cond:
            self._slot = None
            self._want = True
            self._cond.wait_for(lambda: self._slot is not None, timeout)
            slot, self._slot, self._want = self._slot, None, False
        return None if slot is None else slot[0]

    def stale_limit(self) -> float:
        """No fresh frame for this long is a stall; a slow stream gets its own margin."""
        limit = self.cfg.stale_after_s
        if self._interval is not None:
            limit = max(limit, min(SLOW_STREAM_FACTOR * self._interval, SLOW_STREAM_CAP_S))
        return limit

    def check(self, now: float) -> None:
        """Backstop for a call that ignores its timeout: leave it behind, start afresh."""
        busy = self._busy
        if busy is None or self._closed or now - busy[0] <= busy[1]:
            return
        reason = (
            f"camera {self.cfg.name}: {self.role} stream {busy[2]} blocked for "
            f"{now - busy[0]:.1f} s; abandoning it and reconnecting"
        )
        log.warning("%s", reason)
        if busy[2] == "read":
            self.status._stalls.add(now)
        self.status.last_error = reason
        self.status.connected = False
        self.status.state = "reconnecting"
        self._spawn(after_failure=True)

    # ---- reader side (one thread per generation)

    def _spawn(self, *, after_failure: bool) -> None:
        with self._cond:
            if self._closed:
                return
            self._gen += 1
            gen = self._gen
            self._busy = None
        name = f"capture-{self.cfg.name}-{self.role}-{gen}"
        threading.Thread(
            target=self._run, args=(gen, after_failure), name=name, daemon=True
        ).start()

    def _current(self, gen: int) -> bool:
        return gen == self._gen and not self.stop.is_set()

    def _set_busy(self, gen: int, what: str | None, timeout: float = 0.0) -> None:
        if gen != self._gen:
            return
        if what is None:
            self._busy = None
        else:
            limit = max(2 * timeout, timeout + self.stale_limit()) + 1.0
            self._busy = (time.monotonic(), limit, what)

    def _run(self, gen: int, failed_before: bool) -> None:
        name_os_thread()
        while self._current(gen):
            if failed_before:
                self.status._reconnects.add()
            self._set_busy(gen, "open", self.cfg.open_timeout_s)
            try:
                cap = open_capture(self.url, self.cfg)
            except CaptureError as exc:
                self._set_busy(gen, None)
                if not self._failed(gen, str(exc), stalled=False):
                    return
                failed_before = True
                continue
            self._set_busy(gen, None)
            failed_before = False  # a looped file's restart below is not a reconnect
            try:
                if not self._current(gen):
                    return
                self._opened(gen, cap)
                outcome, reason = self._read(gen, cap)
            finally:
                cap.release()
            if gen == self._gen:
                self.status.connected = False
            if outcome == "ended":
                if self.cfg.loop and self._current(gen):
                    continue  # a looped file starts again at once: not a failure
                self._finish(gen)
                return
            if outcome != "failed" and outcome != "stalled":
                return  # stopped or superseded
            if not self._failed(gen, reason, stalled=outcome == "stalled"):
                return
            failed_before = True

    def _opened(self, gen: int, cap: cv2.VideoCapture) -> None:
        if gen != self._gen:
            return
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if w > 0 and h > 0:
            self.status.width, self.status.height = w, h
        self.status.connected, self.status.state = True, "streaming"
        log.info("camera %s: opened %s stream %s", self.cfg.name, self.role, self.status.url)

    def _failed(self, gen: int, reason: str, *, stalled: bool) -> bool:
        """Count and log a failure, wait out the backoff; False if this reader must end."""
        if gen != self._gen:
            return False
        if stalled:
            self.status._stalls.add()
        self.status.state, self.status.last_error = "reconnecting", reason
        delay = self.backoff.next_delay()
        log.warning("%s; retrying in %.1f s", reason, delay)
        self.stop.wait(delay)
        return self._current(gen)

    def _finish(self, gen: int) -> None:
        with self._cond:
            if gen != self._gen:
                return
            self.finished = True
            self.status.state = "finished"
            self._cond.notify_all()

    def _read(self, gen: int, cap: cv2.VideoCapture) -> tuple[str, str]:
        """Grab until the source fails: (outcome, reason); outcome is `ended` (end of a
        file), `failed`, `stalled`, `stopped` or `superseded`."""
        name, role = self.cfg.name, self.role
        read_timeout = self.cfg.read_timeout_s
        is_file = self.kind == "file"
        opened = last_fresh = time.monotonic()
        pace_fps = _file_fps(cap) if is_file else 0.0
        grabbed = 0
        while True:
            if self.stop.is_set():
                return "stopped", ""
            started = time.monotonic()
            self._set_busy(gen, "read", read_timeout)
            ok = cap.grab()
            now = time.monotonic()
            self._set_busy(gen, None)
            if gen != self._gen:
                return "superseded", ""
            took = now - started
            slow = not is_file and took >= FRESH_FRACTION * read_timeout
            if not ok:
                if is_file and grabbed:
                    return "ended", ""
                if slow or now - last_fresh >= self.stale_limit():
                    return "stalled", (
                        f"camera {name}: {role} stream stalled (no new frame for "
                        f"{now - last_fresh:.1f} s)"
                    )
                return "failed", f"camera {name}: {role} stream read failed"
            if slow:
                # Frames flushed out of the decoder by a read timeout: not new ones.
                if now - last_fresh >= self.stale_limit():
                    return "stalled", (
                        f"camera {name}: {role} stream stalled (no new frame for "
                        f"{now - last_fresh:.1f} s)"
                    )
                continue
            grabbed += 1
            if grabbed > 1:
                gap = now - last_fresh
                self._interval = gap if self._interval is None else 0.9 * self._interval + 0.1 * gap
            last_fresh = now
            self.status.note_frame(now)
            if now - opened >= HEALTHY_RESET_S:
                self.backoff.reset()
            if pace_fps:
                # A file read as a live camera: at its own pace, frame n at n / fps.
                ahead = opened + grabbed / pace_fps - time.monotonic()
                if ahead > 0 and self.stop.wait(ahead):
                    return "stopped", ""
            if not self._deliver(gen, cap, now):
                return "failed", f"camera {name}: {role} stream: cannot convert a frame"

    def _deliver(self, gen: int, cap: cv2.VideoCapture, now: float) -> bool:
        """Convert and hand out the frame just grabbed if one is wanted and due."""
        with self._cond:
            if not self._want:
                return True
            if self.period > 0:
                tolerance = 0.5 * (self._interval or 0.0)
                if now < self._next_due - tolerance:
                    return True
        ok, image = cap.retrieve()
        if not ok or image is None:
            return False
        ts, mono = time.time(), time.monotonic()
        with self._cond:
            if gen != self._gen:
                return True
            self._slot = (image, ts, mono)
            self._want = False
            if self.period > 0:
                base = self._next_due if self._next_due > now - self.period else now
                self._next_due = base + self.period
            self._cond.notify_all()
        return True


