"""A batch collector: work submitted from many threads, run together in bounded batches.

Each job runs on its own thread (the subscriber holds up to the batch bound of them at once,
each with its own claim and lease); at synthesis each hands its lines to the model's queue and
waits. The first waiter to find the queue idle becomes the leader: it waits up to ``window_s``
for others to join (not at all once ``size`` are waiting), takes up to ``size`` items of one
key, oldest first, runs them in one call and hands every item its own result. While a batch
runs, the next one gathers. No thread of its own, nothing to start or stop, no Pub/Sub.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Entry(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class BatchQueue(Generic[T, R]):
    def __init__(
        self,
        *,
        run: Callable[[list[T]], Sequence[R]],
        size: int,
        window_s: float,
        key: Callable[[T], Hashable] = lambda _: None,
    ) -> None:
        """``run`` takes a batch and returns one result per item, in order; ``key`` says which
        items may share a batch."""
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self._run = run
        self._size = size
        self._window_s = window_s
        self._key = key
        self._cond = threading.Condition()
        self._pending: deque[_Entry[T, R]] = deque()
        self._busy = False

    @property
    def size(self) -> int:
        return self._size

    def submit(self, items: Sequence[T]) -> list[R]:
        """Block until every item has run; their results in order. An exception ``run``
        raised is raised to every submitter whose items were in that batch."""
        entries: list[_Entry[T, R]] = [_Entry(item) for item in items]
        with self._cond:
            self._pending.extend(entries)
            self._cond.notify_all()
        while not all(e.done for e in entries):
            batch = self._lead(entries)
            if batch:
                self._execute(batch)
        failed = next((e.error for e in entries if e.error is not None), None)
        if failed is not None:
            raise failed
        return [e.result for e in entries]  # type: ignore[misc]  # every entry is done

    def _lead(self, mine: list[_Entry[T, R]]) -> list[_Entry[T, R]]:
        """Wait until this thread's items are done (then ``[]``) or it may run a batch."""
        with self._cond:
            while self._busy or not self._pending:
                if all(e.done for e in mine):
                    return []
                self._cond.wait()
            self._busy = True
            deadline = time.monotonic() + self._window_s
            while self._waiting() < self._size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._take()

    def _waiting(self) -> int:
        """Items that could join the oldest item's batch."""
        first = self._key(self._pending[0].item)
        return sum(1 for e in self._pending if self._key(e.item) == first)

    def _take(self) -> list[_Entry[T, R]]:
        first = self._key(self._pending[0].item)
        batch: list[_Entry[T, R]] = []
        kept: deque[_Entry[T, R]] = deque()
        while self._pending:
            entry = self._pending.popleft()
            if len(batch) < self._size and self._key(entry.item) == first:
                batch.append(entry)
            else:
                kept.append(entry)
        self._pending = kept
        return batch

    def _execute(self, batch: list[_Entry[T, R]]) -> None:
        outcome: list[R] | Exception = RuntimeError("the batch was interrupted")
        try:
            results = list(self._run([e.item for e in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
            outcome = results
        except Exception as exc:  # noqa: BLE001 - re-raised in each waiter's own thread
            outcome = exc
        finally:
            with self._cond:
                for index, entry in enumerate(batch):
                    if isinstance(outcome, Exception):
                        entry.error = outcome
                    else:
                        entry.result = outcome[index]
                    entry.done = True
                self._busy = False
                self._cond.notify_all()
