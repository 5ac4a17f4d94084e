"""A ``JobWatcher`` for a job store that has no listener to offer: every wait just runs out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from shared.usecases.ports import Changes, Sleep


class Unwatched:
    """Waits that are never told anything: each sleeps its whole timeout and reports no change,
    so a waiter polls exactly as it would with a listener that fell silent."""

    def __init__(self, sleep: Sleep) -> None:
        self._sleep = sleep

    @contextmanager
    def watch(self, job_id: str) -> Iterator[Changes]:
        yield _Silence(self._sleep)


class _Silence:
    def __init__(self, sleep: Sleep) -> None:
        self._sleep = sleep

    def wait(self, timeout_s: float) -> bool:
        if timeout_s > 0:
            self._sleep(timeout_s)
        return False
