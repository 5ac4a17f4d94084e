"""Threads for work beside a request: a bounded pool, built once per process by the bootstrap.

Bounded twice: ``workers`` threads, and at most ``max_pending`` tasks submitted and not yet
done. Past that a task runs in the caller's thread (the caller slows down; nothing is queued
without end and nothing is dropped). Each task runs in a copy of the submitter's context, so
its spans join the request's trace.

The threads are daemons: a process that exits does not wait for them (``concurrent.futures``
would, for as long as a call to a backend that has gone away keeps retrying). Only work whose
loss something else repairs is handed off after an answer (see ``shared.usecases.beside``), so
what an exit cuts short is what a crash would: ``drain`` lets a caller that can wait, wait.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.usecases.beside import run_now

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Work:
    future: Future[Any]
    context: contextvars.Context
    task: Callable[[], Any]


class ThreadedRunner:
    def __init__(self, *, workers: int, max_pending: int, name: str = "beside") -> None:
        if workers < 1 or max_pending < 1:
            raise ValueError("a ThreadedRunner needs a worker and room for a task")
        self._workers = workers
        self._max_pending = max_pending
        self._name = name
        self._queue: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._pending = 0
        self._idle = 0
        self._changed = threading.Condition()

    def submit(self, task: Callable[[], T], /) -> Future[T]:
        with self._changed:
            if self._pending >= self._max_pending:
                full = True
            else:
                full = False
                self._pending += 1
                # Threads start on first use, and only while none is idle: a process that never
                # hands work off never has one.
                if self._idle == 0 and len(self._threads) < self._workers:
                    self._start_thread()
        if full:
            return run_now(task)  # the caller does it, rather than queue without bound
        future: Future[T] = Future()
        self._queue.put(_Work(future, contextvars.copy_context(), task))
        return future

    def drain(self, timeout_s: float) -> bool:
        """Wait until nothing handed off is left undone (at most ``timeout_s``); whether so."""
        with self._changed:
            return self._changed.wait_for(lambda: self._pending == 0, timeout=timeout_s)

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            with self._changed:
                self._idle += 1
            work = self._queue.get()
            with self._changed:
                self._idle -= 1
            try:
                if work.future.set_running_or_notify_cancel():
                    try:
                        work.future.set_result(work.context.run(work.task))
                    except Exception as exc:  # noqa: BLE001 - the future re-raises it to its reader
                        work.future.set_exception(exc)
            finally:
                with self._changed:
                    self._pending -= 1
                    self._changed.notify_all()
