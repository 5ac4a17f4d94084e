"""Streamed jobs through the runner with their uploads on a stage of their own (tiny models,
stores are fakes): the same parts and audio as when each piece was uploaded under the engine's
lock, the engine free for other jobs while a job's uploads are slow, and an upload that hangs
or fails ending its job as a transient failure without leaving the engine held.

Waits are bounded (``WAIT_S``): on code that uploads under the lock, the tests that need the
engine during an upload fail at that bound instead of hanging."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

from gpu_worker.audio.encoding import EncodedAudio
from gpu_worker.bucket_io import BucketIO
from gpu_worker.pipeline import StageConfig
from gpu_worker.prompt_cache import PromptCache
from gpu_worker.runner import JobRunner, Outcome, RunnerConfig, RunResult
from gpu_worker.synthesizer import ModelSet, Synthesizer
from gpu_worker.tasks import Task, TaskExecutor
from shared.domain.audio_formats import AudioFormat
from shared.domain.errors import StorageUnavailable
from shared.domain.jobs import AudioResult, Job, JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import EngineKind
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from shared.wire.bodies import JobOptions
from shared.wire.messages import JobMessage
from tests.support.engines import ENGINES, tiny_synthesizer

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))
TEXT = "A streamed job speaks. It has two sentences, said one after the other."
WAIT_S = 30.0
"""Far longer than any job here takes on these CPUs; reaching it means something is stuck."""
PIPELINE = StageConfig(capacity=32, deadline_s=WAIT_S)


@pytest.fixture(scope="module", params=ENGINES, ids=[str(k) for k in ENGINES])
def synth(request: pytest.FixtureRequest, tiny_model_dir: str) -> Synthesizer:
    built = tiny_synthesizer(tiny_model_dir, kind=EngineKind(request.param))
    built.load()
    return built


class Uploads(BucketIO):
    """The bucket, with a hook run before each part's upload (to slow, hold or fail it)."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway=gateway, prompts=PromptCache(max_bytes=0, max_file_bytes=1 << 20))
        self.before_part: Callable[[Task, int], None] = lambda task, index: None
        self.stored: dict[str, bytes] = {}
        self.parts: dict[str, list[bytes]] = {}

    def publish_part(self, task: Task, *, index: int, data: bytes, fmt: AudioFormat) -> None:
        self.before_part(task, index)
        super().publish_part(task, index=index, data=data, fmt=fmt)
        self.parts.setdefault(task.id, []).append(data)

    def store_audio(self, task: Task, audio: EncodedAudio, *, parts: int) -> AudioResult:
        self.stored[task.id] = audio.data
        return super().store_audio(task, audio, parts=parts)


def runner_for(
    gateway: Gateway, synth: Synthesizer, io: Uploads, *, stream: StageConfig
) -> JobRunner:
    executor = TaskExecutor(
        models=ModelSet([synth]),
        io=io,
        limits=gateway.settings.voices,
        max_chunk_chars=40,
        max_join_s=gateway.settings.worker.max_join_s,
        stream=stream,
    )
    config = RunnerConfig(worker_id="w1", backend_id="home-4090", lease_s=60)
    return JobRunner(gateway=gateway, executor=executor, config=config)


def submit(gateway: Gateway, **fields: object) -> Job:
    request = CustomVoiceRequest(text=TEXT, speaker="ryan", stream=True, **fields)
    return submit_job(gateway, principal=ALICE, request=request, options=JobOptions(cache=False))


def in_thread(run: JobRunner, job: Job) -> tuple[threading.Thread, dict[str, RunResult]]:
    result: dict[str, RunResult] = {}

    def target() -> None:
        result["run"] = run.run(JobMessage(job_id=job.id))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


@pytest.mark.parametrize("fmt", [AudioFormat.MP3, AudioFormat.PCM])
def test_the_parts_and_the_audio_are_byte_for_byte_those_of_uploads_under_the_lock(
    gateway: Gateway, synth: Synthesizer, fmt: AudioFormat
) -> None:
    """The same seeded job, its pieces uploaded inline (the old way) and through the stage with
    uploads of uneven length and room for one piece only (so the engine also waits)."""
    inline_io, staged_io = Uploads(gateway), Uploads(gateway)
    jitter = random.Random(3)
    staged_io.before_part = lambda task, index: time.sleep(jitter.uniform(0, 0.03))
    inline = runner_for(
        gateway, synth, inline_io, stream=StageConfig(capacity=1, deadline_s=WAIT_S, inline=True)
    )
    staged = runner_for(
        gateway, synth, staged_io, stream=StageConfig(capacity=1, deadline_s=WAIT_S)
    )
    fields = {"seed": 5, "speed": 1.3, "format": fmt}
    first, second = submit(gateway, **fields), submit(gateway, **fields)
    assert inline.run(JobMessage(job_id=first.id)).outcome is Outcome.SUCCEEDED
    assert staged.run(JobMessage(job_id=second.id)).outcome is Outcome.SUCCEEDED
    assert len(inline_io.parts[first.id]) > 1
    assert staged_io.parts[second.id] == inline_io.parts[first.id]
    assert staged_io.stored[second.id] == inline_io.stored[first.id]


def test_the_engine_serves_another_job_while_a_jobs_upload_is_held(
    gateway: Gateway, synth: Synthesizer
) -> None:
    io = Uploads(gateway)
    held, release = threading.Event(), threading.Event()
    slow = submit(gateway, seed=1)

    def hold(task: Task, index: int) -> None:
        if task.id == slow.id:
            held.set()
            release.wait(WAIT_S)

    io.before_part = hold
    run = runner_for(gateway, synth, io, stream=PIPELINE)
    slow_thread, slow_result = in_thread(run, slow)
    try:
        assert held.wait(WAIT_S)
        other = submit(gateway, seed=2)
        other_thread, other_result = in_thread(run, other)
        other_thread.join(WAIT_S)
        assert not other_thread.is_alive(), "the engine waited for another job's upload"
        assert other_result["run"].outcome is Outcome.SUCCEEDED
        assert slow_thread.is_alive()  # still held: the other job did not wait for it
    finally:
        release.set()
    slow_thread.join(WAIT_S)
    assert slow_result["run"].outcome is Outcome.SUCCEEDED


def test_an_upload_that_hangs_releases_its_job_at_the_deadline_and_frees_the_engine(
    gateway: Gateway, synth: Synthesizer
) -> None:
    """Room for one piece: the engine also waits for room behind the hung upload, and gives up
    at the deadline too."""
    io = Uploads(gateway)
    release = threading.Event()
    hung = submit(gateway, seed=1)

    def hang(task: Task, index: int) -> None:
        if task.id == hung.id:
            release.wait(WAIT_S)

    io.before_part = hang
    run = runner_for(gateway, synth, io, stream=StageConfig(capacity=1, deadline_s=0.5))
    try:
        thread, result = in_thread(run, hung)
        thread.join(WAIT_S)
        assert not thread.is_alive(), "the job waited for its hung upload"
        assert result["run"].outcome is Outcome.RETRY
        released = gateway.jobs.get(hung.id)
        assert released is not None
        assert released.state is JobState.QUEUED
        assert released.error is not None
        assert released.error.code == "storage_unavailable"
        assert released.error.retryable
        # The upload still hangs; the engine is free.
        other = submit(gateway, seed=2)
        assert run.run(JobMessage(job_id=other.id)).outcome is Outcome.SUCCEEDED
    finally:
        release.set()


def test_an_upload_that_fails_releases_its_job_and_frees_the_engine(
    gateway: Gateway, synth: Synthesizer
) -> None:
    io = Uploads(gateway)
    failing = submit(gateway, seed=1)

    def fail(task: Task, index: int) -> None:
        if task.id == failing.id:
            raise StorageUnavailable("upload part: ServiceUnavailable")

    io.before_part = fail
    run = runner_for(gateway, synth, io, stream=PIPELINE)
    assert run.run(JobMessage(job_id=failing.id)).outcome is Outcome.RETRY
    released = gateway.jobs.get(failing.id)
    assert released is not None
    assert released.state is JobState.QUEUED
    assert released.error is not None
    assert released.error.code == "storage_unavailable"
    other = submit(gateway, seed=2)
    assert run.run(JobMessage(job_id=other.id)).outcome is Outcome.SUCCEEDED
