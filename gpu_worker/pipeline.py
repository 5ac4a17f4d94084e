"""A streamed job's second half on a thread of its own: the engine hands its pieces over and
goes on generating while they are stretched, encoded and uploaded.

The engine's lock is held from a line's first piece to its last (a streaming generation keeps
its state on the model), so whatever runs between two pieces runs under it. Before, that was
each piece's stretch, encode and upload: the GPU idled through every upload, and an upload that
hung held the lock, and with it every other job on the model. Now the job's thread (holding the
lock) only puts pieces in a bounded queue, and the stage's thread takes them in order.

* Order: one stage thread per job, first in first out: the same work in the same order as
  before, so the parts and the stored audio are byte for byte what they were.
* Deadline: each item the stage takes must be done within ``deadline_s``; one that is not fails
  the job (``StorageUnavailable``, transient: the job is released and tried again). Python
  cannot stop a thread stuck in a call, so the job's thread gives up on it instead: at its
  next hand-over, or while it waits for room or for the end. The stuck thread is abandoned
  (a daemon: it holds no lock, keeps no process alive, and does nothing more once its call
  returns).
* Backpressure: the queue holds ``capacity`` items. A job whose uploads fall that far behind
  waits for room, under the engine's lock, never longer than the item in hand's deadline.
* Failure: whatever the stage raises is raised in the job's thread at its next hand-over (or
  at the end), which closes the generation and so frees the engine; the pieces still queued
  are dropped.

``inline=True`` does the work in the caller's thread as it is handed over, under the lock, with
no deadline: the old behaviour, kept as a switch to compare against (``bench/engine.py``).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Self, TypeVar

from shared.domain.errors import StorageUnavailable
from shared.settings import WorkerSettings

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    capacity: int
    """Items handed over and not yet taken, at most."""
    deadline_s: float
    """The longest one item's work (stretch, encode and upload of one piece) may take."""
    inline: bool = False
    """Do the work in the caller's thread, under its lock, with no deadline (the old way)."""

    @classmethod
    def of(cls, settings: WorkerSettings) -> StageConfig:
        return cls(
            capacity=settings.stream_queue_pieces,
            deadline_s=settings.stream_upload_deadline_s,
            inline=not settings.stream_pipeline,
        )


class Stage(Generic[T]):
    """``work`` done on each item handed over, in order, on one thread of its own.

    Use as a context manager: ``put`` each item, then ``finish`` to wait for the last; leaving
    the block by an exception abandons what is left instead of waiting for it.
    """

    def __init__(
        self,
        work: Callable[[T], None],
        *,
        config: StageConfig,
        name: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._work = work
        self._config = config
        self._clock = clock
        self._cond = threading.Condition()
        self._items: deque[T] = deque()
        self._closed = False
        """No more items will come: the thread ends once the queue is empty."""
        self._stopped = False
        """Abandoned or failed: the thread takes no more items."""
        self._taken = 0
        self._busy_since: float | None = None
        """When the item in hand was taken; None between items."""
        self._failure: BaseException | None = None
        # The stage runs in a copy of the job thread's context: the job's trace (OpenTelemetry
        # keeps the current span in a context variable) goes on around its uploads.
        context = contextvars.copy_context()
        self._thread = (
            None
            if config.inline
            else threading.Thread(target=context.run, args=(self._run,), name=name, daemon=True)
        )

    def __enter__(self) -> Self:
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abandon()

    def put(self, item: T) -> None:
        """Hand ``item`` over; raises what the stage failed with, or the deadline's error."""
        if self._thread is None:
            self._work(item)
            return
        with self._cond:
            while True:
                self._check()
                if len(self._items) < self._config.capacity:
                    break
                self._cond.wait(self._wait_s())
            self._items.append(item)
            self._cond.notify_all()

    def finish(self) -> None:
        """Wait until every item handed over is done; raises as ``put`` does."""
        if self._thread is None:
            return
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            while self._items or self._busy_since is not None:
                self._check()
                self._cond.wait(self._wait_s())
            self._check()

    def abandon(self) -> None:
        """Drop what is queued; the item in hand, if any, is not waited for."""
        with self._cond:
            self._stopped = True
            self._items.clear()
            self._cond.notify_all()

    # -- inside -----------------------------------------------------------------------------

    def _check(self) -> None:
        """Under the condition: raise the stage's failure, or fail the item in hand that has
        outrun its deadline."""
        if self._failure is None and self._busy_since is not None:
            late_s = self._clock() - self._busy_since
            if late_s > self._config.deadline_s:
                self._stop(
                    StorageUnavailable(
                        f"a streamed piece was not stretched, encoded and uploaded within "
                        f"{self._config.deadline_s:g} s (TTS_WORKER__STREAM_UPLOAD_DEADLINE_S)",
                        details={"item": self._taken, "deadline_s": self._config.deadline_s},
                    )
                )
        if self._failure is not None:
            raise self._failure

    def _wait_s(self) -> float:
        if self._busy_since is None:
            return self._config.deadline_s
        # Wake at the item's deadline at the latest, to give up on it then.
        return max(0.0, self._busy_since + self._config.deadline_s - self._clock()) + 0.001

    def _stop(self, failure: BaseException) -> None:
        self._failure = self._failure or failure
        self._stopped = True
        self._items.clear()
        self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._closed or self._stopped)
                if self._stopped or not self._items:
                    return
                item = self._items.popleft()
                self._taken += 1
                self._busy_since = self._clock()
                self._cond.notify_all()
            try:
                self._work(item)
            except Exception as exc:  # noqa: BLE001 - re-raised in the job's own thread
                with self._cond:
                    self._busy_since = None
                    self._stop(exc)
                return
            with self._cond:
                self._busy_since = None
                self._cond.notify_all()
