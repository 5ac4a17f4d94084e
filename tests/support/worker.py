"""A worker played from inside the API's waits, for tests of waiting and streaming over fakes.

The API waits through ``gateway.sleep``; the fake clock runs this worker's next step on every
sleep, so a test decides exactly what has happened by the time the API looks again: no threads,
no timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.domain.audio_formats import FORMATS, audio_object_name, part_object_name
from shared.domain.jobs import AudioResult, Job, JobError, JobOutput, JobState
from shared.domain.synthesis import (
    CreateVoiceRequest,
    SpeechFields,
    output_format,
    spoken_text,
)
from shared.domain.voices import Voice
from shared.usecases import completion
from shared.usecases.gateway import Gateway
from shared.wire.messages import JobMessage
from tests.support.gateway import Fakes

if TYPE_CHECKING:
    from gpu_worker.tasks import Task

WORKER = "scripted-worker"


@dataclass
class ScriptedWorker:
    fakes: Fakes
    pieces: int = 3
    """How many pieces a streamed job's audio comes in (one per step)."""
    idle_steps: int = 0
    """Steps that do nothing first (a busy or absent worker)."""
    fail_with: str | None = None
    """Fail every job it runs with this error code instead of finishing it."""
    fail_texts: set[str] = field(default_factory=set)
    """Fail only the jobs that speak one of these texts (one bad item of a batch)."""
    steps: int = 0
    published: dict[str, list[bytes]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    """What happened, in order: ``claimed``, ``piece <n>``, ``succeeded``, ``failed``."""
    gateway: Gateway | None = None
    """When given, a finished job goes through the real completion path (its result message,
    its batch's count), as a real worker's does."""
    capacity: int | None = None
    """At most this many jobs running at once (one GPU: 1); ``None``: every queued job is
    claimed at the next step."""
    announce: bool = True
    """Announce each piece on the job (``parts_published``), as the home worker does; false:
    pieces are found only by looking, as RunPod's are."""

    def __post_init__(self) -> None:
        self.fakes.clock.on_sleep.append(self.step)

    def step(self) -> None:
        self.steps += 1
        if self.steps <= self.idle_steps:
            return
        free = self._free_slots()
        for job in self.fakes.jobs.find(state=JobState.QUEUED, limit=100):
            if job.backend and free > 0:  # a cast parent is bookkeeping: no worker runs it
                self._claim(job)
                free -= 1
        for job in self.fakes.jobs.find(state=JobState.RUNNING, limit=100):
            if job.backend:
                self._advance(job)

    def _free_slots(self) -> int:
        if self.capacity is None:
            return 100
        running = self.fakes.jobs.find(state=JobState.RUNNING, limit=100)
        return self.capacity - sum(1 for job in running if job.backend)

    def _claim(self, job: Job) -> None:
        now = self.fakes.clock()
        self.fakes.jobs.update(
            job.id, lambda j: j.claim(WORKER, backend=j.backend, now=now, lease_s=60)
        )
        self.log.append("claimed")

    def _advance(self, job: Job) -> None:
        now = self.fakes.clock()
        failing = self.fail_with or (
            "synthesis_failed" if spoken_text(job.request) in self.fail_texts else None
        )
        if failing is not None:
            error = JobError(code=failing, message=f"scripted {failing}")
            self._finished(
                self.fakes.jobs.update(
                    job.id, lambda j: j.fail(WORKER, attempt=job.attempts, error=error, now=now)
                )
            )
            self.log.append("failed")
            return
        if isinstance(job.request, CreateVoiceRequest):
            self._register(job, job.request)
            return
        fmt = output_format(job.request)
        assert fmt is not None
        streamed = isinstance(job.request, SpeechFields) and job.request.stream
        done = self.published.setdefault(job.id, [])
        if streamed and len(done) < self.pieces:
            data = f"<{job.id}:{len(done)}>".encode()
            path = part_object_name(
                prefix="audio/", job_id=job.id, attempt=job.attempts, index=len(done), fmt=fmt
            )
            self.fakes.blobs.put(path, data, content_type=FORMATS[fmt].content_type)
            done.append(data)
            if self.announce:
                self.fakes.jobs.announce_parts(job.id, attempt=job.attempts, parts=len(done))
            self.log.append(f"piece {len(done) - 1}")
            return
        data = b"".join(done) or f"<{job.id}:whole>".encode()
        path = audio_object_name(prefix="audio/", job_id=job.id, attempt=job.attempts, fmt=fmt)
        stored = self.fakes.blobs.put(path, data, content_type=FORMATS[fmt].content_type)
        result = AudioResult(
            uri=stored.uri,
            format=fmt,
            content_type=FORMATS[fmt].content_type,
            sample_rate=24_000,
            duration_s=1.25,
            bytes=len(data),
            parts=len(done),
        )
        self._finished(
            self.fakes.jobs.update(
                job.id,
                lambda j: j.succeed(WORKER, attempt=job.attempts, result=result, now=now),
            )
        )
        self.log.append("succeeded")

    def _register(self, job: Job, request: CreateVoiceRequest) -> None:
        now = self.fakes.clock()
        voice = Voice(
            id=request.voice_id,
            name=request.name,
            owner=job.owner,
            bucket="test-bucket",
            object_name=f"voice-prompts/{job.id}.pt",
            generation=1,
            size=100,
            ref_text=request.ref_text,
            traits=request.traits,
            created_at=now,
            updated_at=now,
        )
        self.fakes.voices.update(voice.id, lambda _: voice)
        self.fakes.jobs.update(
            job.id,
            lambda j: j.succeed(
                WORKER, attempt=job.attempts, result=None, voice_id=voice.id, now=now
            ),
        )
        self.log.append("registered")

    def _finished(self, job: Job) -> None:
        if self.gateway is not None:
            completion.finished(self.gateway, job)


class Instant:
    """An executor that finishes every task at once with no output."""

    def execute(self, task: Task) -> JobOutput:
        return JobOutput()


def run_instantly(gateway: Gateway, job_id: str) -> None:
    """Run one job through the real runner (claim, lease, completion) on ``Instant``."""
    # Imported here: the worker's modules bring torch, seconds to import for a test that only
    # plays the ScriptedWorker.
    from gpu_worker.runner import JobRunner, RunnerConfig

    config = RunnerConfig(worker_id="w1", backend_id="home-4090", lease_s=60)
    JobRunner(gateway=gateway, executor=Instant(), config=config).run(JobMessage(job_id=job_id))
