"""A streamed job's run starts beside its claim (``JobRunner._claim_ahead``), so the first
piece's generation overlaps the claim's round trips.

What must hold: the run really starts before the claim commits; nothing it writes goes out
before the claim commits; a claim that fails (the job canceled in between, a store that is
down) writes nothing and ends as a claim that failed always has; a claim that commits as
another attempt runs that attempt instead; and any other job is claimed before it runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from gpu_worker.audio.encoding import Waveform, encode
from gpu_worker.bucket_io import BucketIO
from gpu_worker.prompt_cache import PromptCache
from gpu_worker.runner import JobRunner, Outcome, RunnerConfig
from gpu_worker.tasks import Task
from shared.adapters.background import ThreadedRunner
from shared.domain.audio_formats import AudioFormat
from shared.domain.errors import StorageUnavailable
from shared.domain.jobs import Job, JobError, JobOutput, JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import Settings
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from shared.wire.messages import JobMessage
from tests.support.fakes import InMemoryJobStore
from tests.support.gateway import Fakes, fake_gateway

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))
PCM = encode(Waveform(samples=np.zeros(2400, np.float32), sample_rate=24_000), fmt=AudioFormat.PCM)


class ClaimsHeld(InMemoryJobStore):
    """Waits for ``let_claim``, then runs ``before_claim`` (once), before an update made off
    the test's own thread: the claim started beside the run."""

    def __init__(self) -> None:
        super().__init__()
        self.let_claim = threading.Event()
        self.let_claim.set()
        self.before_claim: Callable[[], None] | None = None
        self.claim_error: Exception | None = None
        self._main = threading.current_thread()

    def update(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        if threading.current_thread() is not self._main:
            assert self.let_claim.wait(5), "the claim was waited for before the run started"
            hook, self.before_claim = self.before_claim, None
            if hook is not None:
                hook()
            if self.claim_error is not None:
                raise self.claim_error
        return super().update(job_id, change)


class Streaming:
    """Publishes a piece, then stores the audio, through the 4090's own I/O."""

    def __init__(self, gw: Gateway, *, started: Callable[[], None] = lambda: None) -> None:
        self.io = BucketIO(gateway=gw, prompts=PromptCache(max_bytes=0, max_file_bytes=0))
        self.started = started
        self.runs: list[tuple[int, JobState]] = []
        self._gw = gw

    def execute(self, task: Task) -> JobOutput:
        seen = self._gw.jobs.get(task.id)
        assert seen is not None
        self.runs.append((task.attempt, seen.state))
        self.started()
        self.io.publish_part(task, index=0, data=PCM.data, fmt=AudioFormat.PCM)
        return JobOutput(audio=self.io.store_audio(task, PCM, parts=1))


@pytest.fixture
def store() -> ClaimsHeld:
    return ClaimsHeld()


@pytest.fixture
def gw(settings: Settings, fakes: Fakes, store: ClaimsHeld) -> Gateway:
    beside = ThreadedRunner(workers=2, max_pending=4)
    return replace(fake_gateway(settings, replace(fakes, jobs=store)), tasks=beside)


def runner(gw: Gateway, executor: Streaming) -> JobRunner:
    config = RunnerConfig(worker_id="w1", backend_id="home-4090", lease_s=60)
    return JobRunner(gateway=gw, executor=executor, config=config)


def submit(gw: Gateway, *, stream: bool = True) -> Job:
    request = CustomVoiceRequest(
        text="Hello.", speaker="Ryan", stream=stream, format=AudioFormat.PCM
    )
    return submit_job(gw, principal=ALICE, request=request)


def state_of(gw: Gateway, job: Job) -> JobState:
    current = gw.jobs.get(job.id)
    assert current is not None
    return current.state


def parts_written(fakes: Fakes, job: Job) -> list[str]:
    return [name for name in fakes.blobs.objects if name.startswith(f"audio/{job.id}/")]


def test_the_run_starts_before_its_claim_commits(gw: Gateway, store: ClaimsHeld) -> None:
    job = submit(gw)
    store.let_claim.clear()
    executor = Streaming(gw, started=store.let_claim.set)
    assert runner(gw, executor).run(JobMessage(job_id=job.id)).outcome is Outcome.SUCCEEDED
    assert executor.runs == [(1, JobState.QUEUED)]  # it ran while the job was still queued
    done = gw.jobs.get(job.id)
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    assert done.attempts == 1


@pytest.mark.parametrize(
    ("failure", "outcome", "left"),
    [
        # Canceled by its owner between the run's start and its claim: dropped, acked.
        ("canceled", Outcome.SKIPPED, JobState.CANCELED),
        # The store failed the claim: the message comes back, the job still queued.
        ("store down", Outcome.RETRY, JobState.QUEUED),
    ],
)
def test_a_claim_that_fails_writes_nothing(
    gw: Gateway, store: ClaimsHeld, fakes: Fakes, failure: str, outcome: Outcome, left: JobState
) -> None:
    job = submit(gw)
    if failure == "canceled":
        store.before_claim = lambda: InMemoryJobStore.update(
            store, job.id, lambda j: j.cancel(now=gw.clock(), reason="by its owner")
        )
    else:
        store.claim_error = StorageUnavailable("update job: unavailable (test)")
    store.let_claim.clear()
    executor = Streaming(gw, started=store.let_claim.set)
    result = runner(gw, executor).run(JobMessage(job_id=job.id))
    assert result.outcome is outcome
    assert result.ack is (outcome is Outcome.SKIPPED)
    assert executor.runs == [(1, JobState.QUEUED)]  # it had started
    assert parts_written(fakes, job) == []
    assert state_of(gw, job) is left


def test_a_claim_that_commits_as_another_attempt_runs_that_attempt(
    gw: Gateway, store: ClaimsHeld, fakes: Fakes
) -> None:
    job = submit(gw)
    error = JobError(code="x", message="given back", retryable=True)

    def taken_and_given_back() -> None:
        now = gw.clock()
        InMemoryJobStore.update(
            store, job.id, lambda j: j.claim("w2", backend="home-4090", now=now, lease_s=60)
        )
        InMemoryJobStore.update(
            store, job.id, lambda j: j.release("w2", attempt=1, error=error, now=now)
        )

    store.before_claim = taken_and_given_back
    executor = Streaming(gw)
    assert runner(gw, executor).run(JobMessage(job_id=job.id)).outcome is Outcome.SUCCEEDED
    assert [attempt for attempt, _ in executor.runs] == [1, 2]
    assert parts_written(fakes, job)
    assert all(name.startswith(f"audio/{job.id}/2") for name in parts_written(fakes, job))
    done = gw.jobs.get(job.id)
    assert done is not None
    assert (done.state, done.attempts) == (JobState.SUCCEEDED, 2)


def test_a_job_not_streamed_is_claimed_before_it_runs(gw: Gateway) -> None:
    job = submit(gw, stream=False)
    executor = Streaming(gw)
    assert runner(gw, executor).run(JobMessage(job_id=job.id)).outcome is Outcome.SUCCEEDED
    assert executor.runs == [(1, JobState.RUNNING)]
