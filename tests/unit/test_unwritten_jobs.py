"""A job's message goes out beside its document's write, so it may come first.

The API does not wait for the write before publishing (``jobs._submit``); the 4090's runner and
the RunPod dispatcher look again for ``UNWRITTEN_GRACE_S`` before they take a job for unknown
(``claims.claim_named``). What must hold: a job heard of early still runs, once; a job never
written is dropped after the grace, not before and not much later; a job that cannot be
claimed is refused at once; and the API really publishes before the write has landed.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from gpu_worker.runner import JobRunner, Outcome, RunnerConfig
from gpu_worker.tasks import Task
from shared.adapters.background import ThreadedRunner
from shared.domain.errors import InvalidTransition, NotFound
from shared.domain.jobs import Job, JobOutput, JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import Settings
from shared.usecases.claims import MAX_PAUSE_S, UNWRITTEN_GRACE_S, claim_named
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from shared.wire.messages import JobMessage
from tests.support.fakes import InMemoryJobStore, RecordingPublisher
from tests.support.gateway import Fakes, fake_gateway

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))
HELLO = CustomVoiceRequest(text="Hello.", speaker="Ryan")


class LateJobStore(InMemoryJobStore):
    """The store as a worker sees it while a job's write is in flight: the next ``unseen``
    updates find no job."""

    def __init__(self) -> None:
        super().__init__()
        self.unseen = 0

    def update(self, job_id: str, change: object) -> Job:  # type: ignore[override]
        if self.unseen > 0:
            self.unseen -= 1
            raise NotFound(f"job {job_id} not found (not written yet)")
        return super().update(job_id, change)  # type: ignore[arg-type]


class Executed:
    def __init__(self) -> None:
        self.tasks: list[str] = []

    def execute(self, task: Task) -> JobOutput:
        self.tasks.append(task.id)
        return JobOutput()


def late_gateway(settings: Settings, fakes: Fakes) -> tuple[Gateway, LateJobStore]:
    store = LateJobStore()
    return fake_gateway(settings, replace(fakes, jobs=store)), store


def run(gw: Gateway, job_id: str) -> tuple[Outcome, Executed]:
    executed = Executed()
    runner = JobRunner(
        gateway=gw,
        executor=executed,
        config=RunnerConfig(worker_id="w1", backend_id="home-4090", lease_s=60),
    )
    return runner.run(JobMessage(job_id=job_id)).outcome, executed


def test_a_job_heard_of_before_its_write_runs_once_written(
    settings: Settings, fakes: Fakes
) -> None:
    gw, store = late_gateway(settings, fakes)
    job = submit_job(gw, principal=ALICE, request=HELLO)
    store.unseen = 3
    started = gw.clock()
    outcome, executed = run(gw, job.id)
    assert outcome is Outcome.SUCCEEDED
    assert executed.tasks == [job.id]
    assert store.unseen == 0
    # Three short pauses (5, 10 and 20 ms), not a redelivery's worth of waiting.
    assert (gw.clock() - started).total_seconds() < 0.05


def test_a_job_never_written_is_dropped_after_the_grace(settings: Settings, fakes: Fakes) -> None:
    gw, _ = late_gateway(settings, fakes)
    started = gw.clock()
    outcome, executed = run(gw, "never-written")
    assert outcome is Outcome.SKIPPED
    assert executed.tasks == []
    waited = (gw.clock() - started).total_seconds()
    assert UNWRITTEN_GRACE_S <= waited <= UNWRITTEN_GRACE_S + MAX_PAUSE_S


def test_a_job_that_cannot_be_claimed_is_refused_at_once(gateway: Gateway, fakes: Fakes) -> None:
    job = submit_job(gateway, principal=ALICE, request=HELLO)
    fakes.jobs.update(job.id, lambda j: j.cancel(now=gateway.clock(), reason="by test"))
    started = gateway.clock()
    try:
        claim_named(
            gateway,
            job.id,
            lambda j: j.claim("w1", backend="home-4090", now=gateway.clock(), lease_s=60),
        )
    except InvalidTransition:
        pass
    else:
        raise AssertionError("a canceled job was claimed")
    assert gateway.clock() == started


class SignallingPublisher(RecordingPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.published = threading.Event()

    def publish(self, topic: str, data: bytes, *, attributes: object) -> str:  # type: ignore[override]
        message_id = super().publish(topic, data, attributes=attributes)  # type: ignore[arg-type]
        self.published.set()
        return message_id


class WriteAfterPublish(InMemoryJobStore):
    """A write that lands only once the job's message is out: were the publish to wait for
    the write, neither would ever happen (the write gives up after a few seconds)."""

    def __init__(self, published: threading.Event) -> None:
        super().__init__()
        self._published = published

    def create(self, job: Job) -> tuple[Job, bool]:
        assert self._published.wait(5), "the message waited for the write"
        return super().create(job)


def test_the_message_goes_out_beside_the_write(settings: Settings, fakes: Fakes) -> None:
    publisher = SignallingPublisher()
    store = WriteAfterPublish(publisher.published)
    tasks = ThreadedRunner(workers=1, max_pending=4)
    gw = replace(
        fake_gateway(settings, replace(fakes, jobs=store, publisher=publisher)), tasks=tasks
    )
    job = submit_job(gw, principal=ALICE, request=HELLO)
    assert job.state is JobState.QUEUED
    assert store.get(job.id) == job
    assert [JobMessage.decode(m.data).job_id for m in publisher.messages] == [job.id]
