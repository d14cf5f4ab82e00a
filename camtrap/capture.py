"""Frames from a camera (RTSP, HTTP MJPEG/HLS, a video file, a V4L2 device) that never stays down.

Each stream is read on its own thread (`StreamReader`) that grabs every frame as it arrives,
so no latency builds up in the socket or the decoder however slow the consumer is, and
converts to BGR only the frames someone asked for. The camera thread (`Capture.frames`)
asks for one frame at `detect_fps`. With a `detect_url`, motion runs on that small stream and
the main stream's full-resolution frame is converted only when a crop is cut from it.

How it fails, measured here with OpenCV 5.0's FFmpeg backend (see also FACTS.md):
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
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import cv2
import numpy as np

from camtrap.config import CameraConfig
from camtrap.logs import mask_url, name_os_thread

log = logging.getLogger(__name__)

HEALTHY_RESET_S = 60.0  # streaming this long resets the reconnect backoff
FRESH_FRACTION = 0.8  # a grab that took this share of the read timeout returned no new frame
SLOW_STREAM_FACTOR = 3.0  # a stream is stale after this many of its own frame intervals...
SLOW_STREAM_CAP_S = 60.0  # ...but never later than this (when above stale_after_s)
POLL_S = 0.25  # the camera thread's supervision tick while it waits for a frame
RTSP_OPTIONS = "rtsp_transport;{transport}|analyzeduration;0|probesize;32"


class CaptureError(OSError):
    """A source that cannot be opened or read (raised only when nothing retries: replay)."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One looked-at frame. `image` is what motion runs on: the detect stream's frame when the
    camera has one, else the main stream's. `full()` fetches the main stream's frame of (about)
    the same moment, converted only on demand; call it before asking for the next frame."""

    camera: str
    ts: float  # wall-clock seconds (epoch) when the frame was taken (video clock in replay)
    seq: int
    image: np.ndarray  # BGR uint8
    full: Callable[[], np.ndarray | None] | None = None
    full_size: tuple[int, int] | None = None  # (width, height) of the main stream

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


class _Events:
    """Times of events (reconnects, stalls) for "how many in the last hour", thread-safe."""

    WINDOW_S = 3600.0

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=100_000)
        self._lock = threading.Lock()
        self.total = 0

    def add(self, now: float | None = None) -> None:
        with self._lock:
            self.total += 1
            self._times.append(time.monotonic() if now is None else now)

    def last_hour(self, now: float | None = None) -> int:
        cutoff = (time.monotonic() if now is None else now) - self.WINDOW_S
        with self._lock:
            while self._times and self._times[0] < cutoff:
                self._times.popleft()
            return len(self._times)


def _rate(times: deque[float], now: float, window: float = 5.0) -> float:
    """Events per second over the last `window` seconds (0 when fewer than two)."""
    recent = [t for t in tuple(times) if t >= now - window]
    if len(recent) < 2:
        return 0.0
    return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)


@dataclass
class StreamStatus:
    """Live figures of one stream, written by its reader thread, read by health and stats."""

    url: str = ""  # password masked
    state: str = "starting"
    connected: bool = False
    frames_seen: int = 0
    last_frame_monotonic: float | None = None
    last_error: str | None = None
    width: int | None = None
    height: int | None = None
    _seen_times: deque[float] = field(default_factory=lambda: deque(maxlen=128))
    _reconnects: _Events = field(default_factory=_Events)
    _stalls: _Events = field(default_factory=_Events)

    @property
    def stream_fps(self) -> float:
        return _rate(self._seen_times, time.monotonic())

    @property
    def reconnects(self) -> int:
        """Reopen attempts after a failure, since start."""
        return self._reconnects.total

    @property
    def stalls(self) -> int:
        """Times the stream hung (no fresh frame for too long), since start."""
        return self._stalls.total

    def reconnects_last_hour(self) -> int:
        return self._reconnects.last_hour()

    def stalls_last_hour(self) -> int:
        return self._stalls.last_hour()

    def last_frame_age(self) -> float | None:
        last = self.last_frame_monotonic
        return None if last is None else time.monotonic() - last

    def note_frame(self, now: float) -> None:
        self.frames_seen += 1
        self._seen_times.append(now)
        self.last_frame_monotonic = now

    def as_dict(self) -> dict[str, object]:
        age = self.last_frame_age()
        return {
            "state": self.state,
            "connected": self.connected,
            "stream_fps": round(self.stream_fps, 2),
            "reconnects_last_hour": self.reconnects_last_hour(),
            "stalls_last_hour": self.stalls_last_hour(),
            "last_frame_age_s": None if age is None else round(age, 2),
            "last_error": self.last_error,
        }


@dataclass
class CameraStatus(StreamStatus):
    """The camera as a whole: its motion stream's figures, processed frames, and `main` (the
    full-resolution stream's own figures) when the camera has a separate detect stream."""

    frames_processed: int = 0
    main: StreamStatus | None = None
    active_hours: str | None = None  # e.g. "paused, outside active hours (05:02-20:17)"
    _processed_times: deque[float] = field(default_factory=lambda: deque(maxlen=64))

    @property
    def processed_fps(self) -> float:
        return _rate(self._processed_times, time.monotonic())

    def note_processed(self, now: float) -> None:
        self.frames_processed += 1
        self._processed_times.append(now)

    def as_dict(self) -> dict[str, object]:
        out = super().as_dict()
        out["processed_fps"] = round(self.processed_fps, 2)
        if self.active_hours is not None:
            out["active_hours"] = self.active_hours
        if self.main is not None:
            out["main"] = self.main.as_dict()
        return out


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
        self._slot: tuple[np.ndarray, float] | None = None
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

    def next_frame(self, timeout: float) -> tuple[np.ndarray, float] | None:
        """The newest frame once one is due (BGR, wall-clock ts), or None after `timeout`."""
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
        ts = time.time()
        with self._cond:
            if gen != self._gen:
                return True
            self._slot = (image, ts)
            self._want = False
            if self.period > 0:
                base = self._next_due if self._next_due > now - self.period else now
                self._next_due = base + self.period
            self._cond.notify_all()
        return True


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
                image, ts = got
                self._seq += 1
                status.note_processed(time.monotonic())
                full, full_size = None, None
                if main is not None:
                    full, full_size = self._main_fetch(main)
                yield Frame(cfg.name, ts, self._seq, image, full, full_size)
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
