"""Work beside the caller's: the inline runner (a gateway's default, and the fakes'), and the
one way a use case hands off work that may follow its answer.

What may be handed off is decided where it is handed off, by what a crash at that point would
leave behind (see ``jobs.submit_for_audio``): only work whose loss something else repairs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from shared.usecases.gateway import Gateway

log = logging.getLogger(__name__)

T = TypeVar("T")


class InlineRunner:
    """Runs each task at once, in the caller's thread: the same outcomes as a pool, in order."""

    def submit(self, task: Callable[[], T], /) -> Future[T]:
        return run_now(task)


def run_now(task: Callable[[], T]) -> Future[T]:
    """``task`` run here and now, its value or its exception in a finished future."""
    future: Future[T] = Future()
    try:
        future.set_result(task())
    except Exception as exc:  # noqa: BLE001 - re-raised by the future to whoever reads it
        future.set_exception(exc)
    return future


def after_answer(gw: Gateway, task: Callable[[], object], *, what: str, job_id: str) -> None:
    """Run ``task`` beside the caller, nobody waiting for it: a failure is logged, and must
    be one that something else repairs (the caller chose it for that)."""
    gw.tasks.submit(AfterAnswer(task, what=what, job_id=job_id))


class AfterAnswer:
    """A task handed off after an answer: its failure is logged, since nobody reads it."""

    def __init__(self, task: Callable[[], object], *, what: str, job_id: str) -> None:
        self.task = task
        self.what = what
        self.job_id = job_id

    def __call__(self) -> None:
        try:
            self.task()
        except Exception:
            log.exception(f"{self.what} failed after the answer", extra={"job_id": self.job_id})
