"""Waits and streams are told, not asking: woken by the job's document changing (a move, an
announced piece), with polling only as the fallback. And whatever the listener does (nothing
at all, or fire without cease), every wait ends by its deadline and every stream by its idle
timeout.

The first tests run in real time over the in-memory watcher, with a fallback poll of a minute,
so nothing but being told can explain a prompt answer; the rest run on the fake clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.watching import Unwatched
from shared.domain.audio_formats import FORMATS, AudioFormat, audio_object_name, part_object_name
from shared.domain.errors import StillRunning
from shared.domain.jobs import AudioResult, Job, JobState
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import ApiSettings, Settings
from shared.usecases.delivery import Piece, pieces, wait_for
from shared.usecases.gateway import Gateway
from shared.usecases.ports import Changes
from tests.support.fakes import FakeClock, InMemoryJobWatcher
from tests.support.gateway import Fakes, fake_gateway
from tests.support.worker import ScriptedWorker

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WORKER = "w1"
NEVER_POLL = ApiSettings(poll_initial_s=60.0, poll_max_s=60.0)
"""A fallback so slow that a wait answered within seconds was told."""


def streamed(job_id: str = "job1") -> Job:
    return Job(
        id=job_id,
        owner="alice",
        request=CustomVoiceRequest(text="One. Two.", speaker="Ryan", stream=True, format="pcm"),
        backend="home-4090",
        created_at=T0,
        updated_at=T0,
    )


def running(fakes: Fakes, job_id: str = "job1") -> Job:
    fakes.jobs.create(streamed(job_id))
    return fakes.jobs.update(
        job_id, lambda j: j.claim(WORKER, backend="home-4090", now=T0, lease_s=600)
    )


def publish(fakes: Fakes, job: Job, index: int, *, announce: bool = True) -> None:
    path = part_object_name(
        prefix="audio/", job_id=job.id, attempt=job.attempts, index=index, fmt=AudioFormat.PCM
    )
    fakes.blobs.put(path, piece_bytes(index), content_type=FORMATS[AudioFormat.PCM].content_type)
    if announce:
        fakes.jobs.announce_parts(job.id, attempt=job.attempts, parts=index + 1)


def piece_bytes(index: int) -> bytes:
    return f"<piece {index}>".encode()


def succeed(fakes: Fakes, job: Job, *, parts: int) -> None:
    data = b"".join(piece_bytes(i) for i in range(parts))
    path = audio_object_name(prefix="audio/", job_id=job.id, attempt=job.attempts,
                             fmt=AudioFormat.PCM)  # fmt: skip
    stored = fakes.blobs.put(path, data, content_type="audio/pcm")
    result = AudioResult(
        uri=stored.uri,
        format=AudioFormat.PCM,
        content_type="audio/pcm",
        sample_rate=24_000,
        duration_s=1.0,
        bytes=len(data),
        parts=parts,
    )
    fakes.jobs.update(
        job.id, lambda j: j.succeed(WORKER, attempt=job.attempts, result=result, now=T0)
    )


def in_real_time(fakes: Fakes, api: ApiSettings) -> Gateway:
    """The fakes, a real clock, and a watcher that blocks until a write wakes it."""
    fakes.watcher = InMemoryJobWatcher(fakes.jobs)
    return fake_gateway(Settings(bucket="test-bucket", api=api), fakes, real_time=True)


def soon(*steps: tuple[float, Callable[[], object]]) -> threading.Thread:
    """A worker on another thread: each step after its delay."""

    def play() -> None:
        for delay_s, step in steps:
            time.sleep(delay_s)
            step()

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread


# -- told ----------------------------------------------------------------------------------


def test_a_wait_is_woken_by_its_job_finishing(fakes: Fakes) -> None:
    gw = in_real_time(fakes, NEVER_POLL)
    fakes.jobs.create(streamed())
    job = fakes.jobs.get("job1")
    assert job is not None

    def claim() -> None:
        fakes.jobs.update("job1", lambda j: j.claim(WORKER, backend="home-4090", now=T0,
                                                    lease_s=600))  # fmt: skip

    def finish() -> None:
        current = fakes.jobs.get("job1")
        assert current is not None
        succeed(fakes, current, parts=0)

    worker = soon((0.2, claim), (0.2, finish))
    started = time.monotonic()
    done = wait_for(gw, job, timeout_s=120)
    waited = time.monotonic() - started
    worker.join()
    assert done.state is JobState.SUCCEEDED
    assert 0.35 <= waited < 10  # the worker's 0.4 s, not the minute's poll
    assert +fakes.watcher.watching == {}  # closed


def test_a_stream_reads_each_piece_as_it_is_announced(fakes: Fakes) -> None:
    gw = in_real_time(fakes, NEVER_POLL)
    job = running(fakes)
    worker = soon(
        (0.2, lambda: publish(fakes, job, 0)),
        (0.2, lambda: publish(fakes, job, 1)),
        (3.0, lambda: succeed(fakes, job, parts=2)),
    )
    started = time.monotonic()
    arrived: list[tuple[Piece, float]] = []
    for piece in pieces(gw, job, idle_s=120):
        arrived.append((piece, time.monotonic() - started))
    worker.join()
    assert [p for p, _ in arrived] == [Piece(0, piece_bytes(0)), Piece(1, piece_bytes(1))]
    # Each as its announcement came, while the job still ran (it succeeds at 3.4 s, and the
    # stream never polls): not woken by the job's end.
    assert max(elapsed for _, elapsed in arrived) < 2.5
    assert +fakes.watcher.watching == {}  # the stream's watch closed with it


def test_pieces_nobody_announces_are_found_by_the_fallback(fakes: Fakes) -> None:
    """RunPod's pieces: its worker cannot write the job, so the stream looks for them."""
    gw = in_real_time(fakes, ApiSettings(poll_initial_s=0.05, poll_max_s=0.2))
    job = running(fakes)
    worker = soon(
        (0.1, lambda: publish(fakes, job, 0, announce=False)),
        (0.1, lambda: publish(fakes, job, 1, announce=False)),
        (0.3, lambda: succeed(fakes, job, parts=2)),
    )
    got = list(pieces(gw, job, idle_s=30))
    worker.join()
    assert got == [Piece(0, piece_bytes(0)), Piece(1, piece_bytes(1))]


def test_a_finished_job_is_answered_without_a_listener(gateway: Gateway, fakes: Fakes) -> None:
    job = running(fakes)
    succeed(fakes, job, parts=1)
    publish(fakes, job, 0, announce=False)
    done = fakes.jobs.get(job.id)
    assert done is not None
    opened: list[str] = []
    watcher = fakes.watcher

    class Counting:
        def watch(self, job_id: str) -> AbstractContextManager[Changes]:
            opened.append(job_id)
            return watcher.watch(job_id)

    gw = replace(gateway, watcher=Counting())
    assert wait_for(gw, done, timeout_s=5) is done
    assert list(pieces(gw, done, idle_s=5)) == [Piece(0, piece_bytes(0))]
    assert opened == []


def test_a_streamed_job_over_the_fake_clock_is_told_of_each_piece(
    gateway: Gateway, fakes: Fakes
) -> None:
    """The scripted worker announces as the home worker does: each piece is read on the turn
    it is published, never a fallback interval later."""
    worker = ScriptedWorker(fakes, pieces=3)
    fakes.jobs.create(streamed())
    job = fakes.jobs.get("job1")
    assert job is not None
    got = list(pieces(gateway, job, idle_s=60))
    assert [p.index for p in got] == [0, 1, 2]
    assert worker.log == ["claimed", "piece 0", "piece 1", "piece 2", "succeeded"]
    assert fakes.jobs.announcements["job1"] == 3
    # One fallback interval a step at most (0.1 s): told at once, no backoff grew.
    assert fakes.clock() - T0 <= timedelta(seconds=0.1 * worker.steps + 1e-6)


def test_the_fake_clock_stream_still_works_when_nothing_is_announced(
    gateway: Gateway, fakes: Fakes
) -> None:
    ScriptedWorker(fakes, pieces=3, announce=False)
    fakes.jobs.create(streamed())
    job = fakes.jobs.get("job1")
    assert job is not None
    assert [p.index for p in pieces(gateway, job, idle_s=60)] == [0, 1, 2]
    assert fakes.jobs.announcements["job1"] == 0


# -- a listener that never fires, or never stops -------------------------------------------


class Deaf:
    """A watch whose listener was dropped: it never says anything changed, and each wait
    runs its whole timeout (on the fake clock)."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.waits: list[float] = []

    @contextmanager
    def watch(self, job_id: str) -> Iterator[Changes]:
        yield self

    def wait(self, timeout_s: float) -> bool:
        self.waits.append(timeout_s)
        self._clock.sleep(timeout_s)
        return False


class Chatty:
    """A listener that fires without cease (and nothing changes): each wait returns at once,
    a little later on the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock

    @contextmanager
    def watch(self, job_id: str) -> Iterator[Changes]:
        yield self

    def wait(self, timeout_s: float) -> bool:
        self._clock.advance(0.001)
        return True


@pytest.mark.parametrize("listener", [Deaf, Chatty])
def test_a_wait_ends_by_its_deadline_whatever_the_listener_does(
    gateway: Gateway, fakes: Fakes, listener: Callable[[FakeClock], object]
) -> None:
    fakes.jobs.create(streamed())
    job = fakes.jobs.get("job1")
    assert job is not None
    gw = replace(gateway, watcher=listener(fakes.clock))  # type: ignore[arg-type]
    started = fakes.clock()
    still = wait_for(gw, job, timeout_s=30)
    assert still.state is JobState.QUEUED
    assert timedelta(seconds=30) <= fakes.clock() - started <= timedelta(seconds=30.01)


@pytest.mark.parametrize("listener", [Deaf, Chatty])
def test_a_stream_ends_by_its_idle_timeout_whatever_the_listener_does(
    gateway: Gateway, fakes: Fakes, listener: Callable[[FakeClock], object]
) -> None:
    job = running(fakes)
    publish(fakes, job, 0)
    gw = replace(gateway, watcher=listener(fakes.clock))  # type: ignore[arg-type]
    stream = pieces(gw, job, idle_s=10)
    assert next(stream) == Piece(0, piece_bytes(0))
    sent = fakes.clock()
    with pytest.raises(StillRunning) as ended:
        next(stream)
    assert ended.value.details["next_piece"] == 1
    assert timedelta(seconds=10) <= fakes.clock() - sent <= timedelta(seconds=10.01)


def test_a_dropped_listener_leaves_the_fallback_to_finish_the_wait(
    gateway: Gateway, fakes: Fakes
) -> None:
    deaf = Deaf(fakes.clock)
    worker = ScriptedWorker(fakes, pieces=2)
    fakes.jobs.create(streamed())
    job = fakes.jobs.get("job1")
    assert job is not None
    gw = replace(gateway, watcher=deaf)
    assert [p.index for p in pieces(gw, job, idle_s=60)] == [0, 1]
    assert worker.log[-1] == "succeeded"
    # The fallback's looks, easing off between pieces and starting short again at each.
    assert max(deaf.waits) <= gateway.settings.api.poll_max_s
    assert deaf.waits[0] == gateway.settings.api.poll_initial_s


def test_a_real_time_wait_on_a_deaf_listener_ends_by_its_deadline(fakes: Fakes) -> None:
    gw = in_real_time(fakes, NEVER_POLL)
    gw = replace(gw, watcher=Unwatched(time.sleep))  # no listener: its waits only run out
    fakes.jobs.create(streamed())
    job = fakes.jobs.get("job1")
    assert job is not None
    started = time.monotonic()
    assert wait_for(gw, job, timeout_s=0.5).state is JobState.QUEUED
    assert 0.45 <= time.monotonic() - started < 3
