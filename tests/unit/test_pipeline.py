"""The stream stage (``gpu_worker/pipeline.py``): in order, on its own thread, bounded, and never
leaving the handing thread stuck behind work that fails or hangs. Threads only, no model.

Waits are bounded (``WAIT_S``) so that a stage that would block forever fails its test."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from gpu_worker.pipeline import Stage, StageConfig
from shared.domain.errors import StorageUnavailable

WAIT_S = 10.0
"""Far longer than any step here takes; reaching it means the stage hung."""


def config(*, capacity: int = 8, deadline_s: float = WAIT_S, inline: bool = False) -> StageConfig:
    return StageConfig(capacity=capacity, deadline_s=deadline_s, inline=inline)


def test_items_are_worked_in_order_on_another_thread_and_finish_waits_for_the_last() -> None:
    done: list[int] = []
    threads: set[str] = set()

    def work(item: int) -> None:
        time.sleep(0.001 * (item % 3))
        threads.add(threading.current_thread().name)
        done.append(item)

    with Stage(work, config=config(capacity=2), name="stage-under-test") as stage:
        for item in range(20):
            stage.put(item)
        stage.finish()
    assert done == list(range(20))
    assert threads == {"stage-under-test"}


JOB = contextvars.ContextVar[str]("job")


def test_the_work_runs_in_the_handing_threads_context() -> None:
    """What the job's thread had set (its trace's current span) holds around its uploads."""
    seen: list[str] = []

    def work(item: int) -> None:
        seen.append(JOB.get("none"))

    token = JOB.set("job-1")
    try:
        with Stage(work, config=config(), name="s") as stage:
            stage.put(1)
            stage.finish()
    finally:
        JOB.reset(token)
    assert seen == ["job-1"]


def test_inline_works_each_item_in_the_handing_thread_as_it_is_handed_over() -> None:
    done: list[tuple[int, str]] = []

    def work(item: int) -> None:
        done.append((item, threading.current_thread().name))

    with Stage(work, config=config(inline=True), name="unused") as stage:
        stage.put(1)
        assert done == [(1, threading.current_thread().name)]
        stage.finish()


def test_a_full_queue_holds_the_handing_thread_until_there_is_room() -> None:
    release = threading.Event()
    handed: list[int] = []

    def hand_over(stage: Stage[int]) -> None:
        for item in range(4):
            stage.put(item)
            handed.append(item)

    def work(item: int) -> None:
        release.wait(WAIT_S)

    with Stage(work, config=config(capacity=2), name="s") as stage:
        handing = threading.Thread(target=hand_over, args=(stage,), daemon=True)
        handing.start()
        # Item 0 in hand, items 1 and 2 queued: item 3 waits for room.
        deadline = time.monotonic() + WAIT_S
        while len(handed) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)
        assert handed == [0, 1, 2]
        release.set()
        handing.join(WAIT_S)
        assert handed == [0, 1, 2, 3]
        stage.finish()


def test_a_failure_is_raised_in_the_handing_thread_and_the_rest_is_dropped() -> None:
    done: list[int] = []

    def work(item: int) -> None:
        if item == 2:
            raise StorageUnavailable("upload refused")
        done.append(item)

    def run() -> None:
        with Stage(work, config=config(capacity=100), name="s") as stage:
            for item in range(5):
                stage.put(item)
            stage.finish()

    with pytest.raises(StorageUnavailable, match="upload refused"):
        run()
    assert done == [0, 1]


def test_work_past_its_deadline_fails_the_handing_thread_which_does_not_wait_for_it() -> None:
    stuck = threading.Event()
    unstick = threading.Event()

    def work(item: int) -> None:
        stuck.set()
        unstick.wait(WAIT_S)  # an upload that hangs

    def run() -> None:
        with Stage(work, config=config(deadline_s=0.2), name="s") as stage:
            stage.put(1)
            assert stuck.wait(WAIT_S)
            stage.put(2)  # queued behind the stuck one: no wait here
            stage.finish()  # gives up at the deadline, the work still stuck

    started = time.monotonic()
    try:
        with pytest.raises(StorageUnavailable, match=r"within 0\.2 s"):
            run()
        assert time.monotonic() - started < WAIT_S / 2
        assert not unstick.is_set()
    finally:
        unstick.set()


def test_a_handing_thread_waiting_for_room_gives_up_at_the_deadline() -> None:
    unstick = threading.Event()

    def work(item: int) -> None:
        unstick.wait(WAIT_S)

    def run() -> None:
        with Stage(work, config=config(capacity=1, deadline_s=0.2), name="s") as stage:
            for item in range(3):  # the third waits for room that never comes
                stage.put(item)

    try:
        with pytest.raises(StorageUnavailable):
            run()
    finally:
        unstick.set()


def test_leaving_by_an_exception_abandons_the_queue_without_waiting() -> None:
    unstick = threading.Event()
    done: list[int] = []

    def work(item: int) -> None:
        unstick.wait(WAIT_S)
        done.append(item)

    def run() -> None:
        with Stage(work, config=config(), name="s") as stage:
            for item in range(3):
                stage.put(item)
            raise RuntimeError("the job stopped")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the job stopped"):
        run()
    assert time.monotonic() - started < WAIT_S / 2
    unstick.set()
    time.sleep(0.05)
    assert done in ([], [0])  # the item in hand, at most: the queued ones were dropped
