"""systemd's side of the daemon: notify messages, the watchdog's pace, and handing freed heap
back to the OS. Everything here is a no-op outside systemd (or outside glibc)."""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_EVERY_S = 30.0
STATUS_EVERY_S = 10.0


def sd_notify(message: str) -> bool:
    """Send one datagram to systemd's NOTIFY_SOCKET; False outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)
        return False


def reloading() -> None:
    sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")


def watchdog_usec() -> int:
    return int(os.environ.get("WATCHDOG_USEC", "0") or 0)


def stall_limit_s() -> float:
    """How long a thread may show no progress before the watchdog stops being fed."""
    usec = watchdog_usec()
    return max(5.0, usec / 2e6) if usec else 60.0


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _load_malloc_trim()


def trim_heap() -> None:
    """Hand freed heap pages back to the OS: batches of varying size leave glibc's heap at
    its high-water mark, and a long run's RSS climbs in steps without this (the soak runs
    in bench/RESULTS.md)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


class Heartbeat:
    """The main loop's periodic duties toward systemd: WATCHDOG=1 at half the watchdog
    interval while the daemon is healthy, STATUS= every few seconds, a heap trim."""

    def __init__(self) -> None:
        usec = watchdog_usec()
        self.ping_every = usec / 2e6 if usec else None
        self._last_ping = self._last_status = self._last_trim = 0.0

    def beat(self, now: float, healthy: Callable[[], bool], status: Callable[[], str]) -> None:
        due = self.ping_every is not None and now - self._last_ping >= self.ping_every
        if due and healthy():
            sd_notify("WATCHDOG=1")
            self._last_ping = now
        if now - self._last_status >= STATUS_EVERY_S:
            sd_notify(f"STATUS={status()}")
            self._last_status = now
        if now - self._last_trim >= TRIM_EVERY_S:
            trim_heap()
            self._last_trim = now
