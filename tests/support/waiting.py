"""Waiting on events, never on the clock: poll a condition until it holds, with a deadline
generous enough that only a condition that never comes true reaches it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    condition: Callable[[], T],
    *,
    timeout_s: float = 60,
    interval_s: float = 0.05,
    message: str | Callable[[], str] = "the condition never held",
) -> T:
    """The first truthy value ``condition()`` returns, polled every ``interval_s``; an
    AssertionError with ``message`` (or what it returns, for a last look at the state) when none
    came within ``timeout_s``. Tests assert on what came, not on how long it took."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"after {timeout_s:g} s: {message() if callable(message) else message}"
            )
        time.sleep(interval_s)
