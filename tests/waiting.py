"""The one way tests wait for something that happens on another thread or process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, step: float = 0.02) -> T:
    """Poll `predicate` until it returns something truthy, and return that value.

    On timeout raise AssertionError naming `what` and the last value seen, so a failing test
    says what it was waiting for instead of `assert False`. The predicate is always called
    at least once, and once more at the deadline, so a slow step never loses the last chance.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last: {value!r})")
        time.sleep(max(0.0, min(step, deadline - time.monotonic())))
