"""Watching a job, held to one contract: the in-memory watcher (told by the fake store's
writes) and the Firestore listener on the emulator wake a waiter the moment the job document
changes, and let it time out when nothing does. Also the piece announcements a watch hears
(``announce_parts``), which both stores keep alike."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud.firestore_v1.document import DocumentReference

from shared.bootstrap import build_gateway
from shared.domain.errors import NotFound, StillRunning
from shared.domain.jobs import Job, JobState
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import ApiSettings, Settings
from shared.usecases.delivery import pieces, wait_for
from shared.usecases.ports import Changes, JobStore, JobWatcher
from tests.support.fakes import InMemoryJobStore, InMemoryJobWatcher

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTLE_S = 10.0
"""Generous bound on what must come "at once" (the emulator on a busy machine)."""


@dataclass(frozen=True)
class Watched:
    jobs: JobStore
    watcher: JobWatcher


@pytest.fixture(params=["fake", "firestore"])
def watched(request: pytest.FixtureRequest) -> Iterator[Watched]:
    if request.param == "fake":
        store = InMemoryJobStore()
        yield Watched(store, InMemoryJobWatcher(store))
        return
    settings: Settings = request.getfixturevalue("cloud_settings")
    gw = build_gateway(settings)
    yield Watched(gw.jobs, gw.watcher)


def new_job(store: JobStore, *, attempts: int = 0) -> Job:
    job = Job(
        id=uuid.uuid4().hex[:12],
        owner="alice",
        request=CustomVoiceRequest(text="hi", speaker="Vivian", stream=True),
        backend="home-4090",
        attempts=attempts,
        created_at=T0,
        updated_at=T0,
    )
    store.create(job)
    return job


def settled(changes: Changes) -> None:
    """Past the first wait: the document as the watch first found it counts as a change."""
    started = time.monotonic()
    assert changes.wait(SETTLE_S) is True
    assert time.monotonic() - started < SETTLE_S


def later(delay_s: float, write: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay_s), write()), daemon=True)
    thread.start()
    return thread


def timed_wait(changes: Changes, timeout_s: float) -> tuple[bool, float]:
    started = time.monotonic()
    changed = changes.wait(timeout_s)
    return changed, time.monotonic() - started


def test_a_job_moving_wakes_a_waiter_well_before_its_timeout(watched: Watched) -> None:
    job = new_job(watched.jobs)
    with watched.watcher.watch(job.id) as changes:
        settled(changes)
        writer = later(0.3, lambda: watched.jobs.update(job.id, lambda j: j.claim(
            "w1", backend="home-4090", now=T0, lease_s=60)))  # fmt: skip
        changed, waited = timed_wait(changes, 30.0)
        writer.join()
    assert changed is True
    assert 0.25 <= waited < 5.0


def test_an_announced_piece_wakes_a_waiter(watched: Watched) -> None:
    job = new_job(watched.jobs, attempts=1)
    with watched.watcher.watch(job.id) as changes:
        settled(changes)
        writer = later(0.3, lambda: watched.jobs.announce_parts(job.id, attempt=1, parts=1))
        changed, waited = timed_wait(changes, 30.0)
        writer.join()
    assert changed is True
    assert 0.25 <= waited < 5.0
    stored = watched.jobs.get(job.id)
    assert stored is not None
    assert stored.announced_parts == 1


def test_with_no_change_a_wait_returns_false_at_its_timeout(watched: Watched) -> None:
    job = new_job(watched.jobs)
    with watched.watcher.watch(job.id) as changes:
        settled(changes)
        changed, waited = timed_wait(changes, 0.5)
    assert changed is False
    assert 0.45 <= waited < 3.0


def test_changes_while_nobody_waits_are_heard_at_the_next_wait(watched: Watched) -> None:
    job = new_job(watched.jobs, attempts=1)
    with watched.watcher.watch(job.id) as changes:
        settled(changes)
        watched.jobs.announce_parts(job.id, attempt=1, parts=1)
        watched.jobs.announce_parts(job.id, attempt=1, parts=2)
        assert changes.wait(SETTLE_S) is True  # told, however many writes it was
        stored = watched.jobs.get(job.id)  # and the read after the wait sees them
        assert stored is not None
        assert stored.announced_parts == 2


def test_a_watch_is_closed_on_exit_and_writes_go_on(watched: Watched) -> None:
    job = new_job(watched.jobs, attempts=1)
    with watched.watcher.watch(job.id) as changes:
        settled(changes)
    watched.jobs.announce_parts(job.id, attempt=1, parts=1)
    watched.jobs.update(job.id, lambda j: j.model_copy(update={"backend": "runpod"}))
    if isinstance(watched.watcher, InMemoryJobWatcher):
        assert +watched.watcher.watching == {}


def test_each_run_announces_under_its_own_attempt(watched: Watched) -> None:
    """A stale run's late count lands beside the current one's: it misleads no one."""
    job = new_job(watched.jobs, attempts=2)
    watched.jobs.announce_parts(job.id, attempt=2, parts=1)
    watched.jobs.announce_parts(job.id, attempt=1, parts=7)  # the run before, late
    watched.jobs.announce_parts(job.id, attempt=2, parts=3)
    stored = watched.jobs.get(job.id)
    assert stored is not None
    assert stored.parts_published == {1: 7, 2: 3}
    assert stored.announced_parts == 3
    assert stored.updated_at == job.updated_at  # a piece is not a move of the job


def test_announcements_survive_the_jobs_own_transactions(watched: Watched) -> None:
    job = new_job(watched.jobs, attempts=1)
    watched.jobs.announce_parts(job.id, attempt=1, parts=2)
    moved = watched.jobs.update(job.id, lambda j: j.claim("w1", backend="home-4090", now=T0,
                                                          lease_s=60))  # fmt: skip
    assert moved.parts_published == {1: 2}
    stored = watched.jobs.get(job.id)
    assert stored is not None
    assert (stored.state, stored.attempts, stored.parts_published) == (
        JobState.RUNNING,
        2,
        {1: 2},
    )
    assert stored.announced_parts == 0  # the new run has announced nothing yet


def test_announcing_for_a_job_that_is_gone_creates_nothing(watched: Watched) -> None:
    missing = uuid.uuid4().hex[:12]
    with pytest.raises(NotFound):
        watched.jobs.announce_parts(missing, attempt=1, parts=1)
    assert watched.jobs.get(missing) is None


# -- the Firestore listener failing --------------------------------------------------------


def dropped_at_once(real: Callable[..., Any]) -> Callable[..., Any]:
    def listen(self: DocumentReference, callback: Callable[..., None]) -> Any:
        listener = real(self, callback)
        listener.close()  # as the client does when the server ends the stream for good
        return listener

    return listen


def never_started(self: DocumentReference, callback: Callable[..., None]) -> Any:
    raise RuntimeError("can't start new thread")


@pytest.mark.parametrize("failure", ["dropped", "never started"])
def test_a_failed_firestore_listener_leaves_waits_to_the_fallback(
    cloud_settings: Settings, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    listen = (
        dropped_at_once(DocumentReference.on_snapshot) if failure == "dropped" else never_started
    )
    monkeypatch.setattr(DocumentReference, "on_snapshot", listen)
    settings = Settings(
        bucket=cloud_settings.bucket,
        collection_prefix=cloud_settings.collection_prefix,
        api=ApiSettings(poll_initial_s=0.05, poll_max_s=0.2),
    )
    gw = build_gateway(settings)
    job = new_job(gw.jobs)

    started = time.monotonic()
    assert wait_for(gw, job, timeout_s=1.0).state is JobState.QUEUED  # ends by its deadline
    assert 1.0 <= time.monotonic() - started < 4.0

    writer = later(0.3, lambda: gw.jobs.update(job.id, lambda j: j.claim(
        "w1", backend="home-4090", now=T0, lease_s=60)))  # fmt: skip
    started = time.monotonic()
    stream = pieces(gw, job, idle_s=1.0)
    with pytest.raises(StillRunning):  # the claim is seen by looking; no piece ever comes
        next(stream)
    writer.join()
    assert 1.0 <= time.monotonic() - started < 5.0
    moved = gw.jobs.get(job.id)
    assert moved is not None
    assert moved.state is JobState.RUNNING
