"""What a stream and a camera report about themselves: state, rates, reconnects, stalls."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

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

