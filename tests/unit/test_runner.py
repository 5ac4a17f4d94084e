"""The job runner over fakes: claim rules, outcomes, and the ack each one implies."""

from __future__ import annotations

import io
import threading
from datetime import datetime, timedelta

import numpy as np
import pytest
import soundfile as sf

from gpu_worker.audio.encoding import Waveform, encode
from gpu_worker.bucket_io import BucketIO
from gpu_worker.prompt_cache import PromptCache
from gpu_worker.runner import JobRunner, Outcome, RunnerConfig, RunResult
from gpu_worker.tasks import Task
from shared.domain.audio_formats import AudioFormat
from shared.domain.errors import BackendUnavailable, SynthesisFailed
from shared.domain.jobs import JobOutput, JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.usecases.batch import retry_job
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import cancel_job, submit_job
from shared.wire.messages import JobMessage
from tests.support.gateway import Fakes
from tests.support.waiting import eventually

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))


class CountingSynth:
    """Stores a 0.5 s tone the way the home worker does; optionally raises; counts calls."""

    def __init__(self, error: Exception | None = None, *, gateway: Gateway | None = None) -> None:
        self.gateway = gateway
        self.calls = 0
        self.error = error
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def execute(self, task: Task) -> JobOutput:
        self.calls += 1
        self.entered.set()
        self.release.wait(10)
        if self.error is not None:
            raise self.error
        t = np.arange(12000, dtype=np.float32) / 24000
        tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        audio = encode(Waveform(samples=tone, sample_rate=24000), fmt=AudioFormat.WAV)
        if self.gateway is None:
            return JobOutput()
        prompts = PromptCache(max_bytes=0, max_file_bytes=0)
        io = BucketIO(gateway=self.gateway, prompts=prompts)
        return JobOutput(audio=io.store_audio(task, audio, parts=0))


def make_runner(
    gateway: Gateway, synth: CountingSynth, *, worker: str = "w1", lease_s: float = 60
) -> JobRunner:
    if synth.gateway is None:
        synth.gateway = gateway
    return JobRunner(
        gateway=gateway,
        executor=synth,
        config=RunnerConfig(worker_id=worker, backend_id="home-4090", lease_s=lease_s),
    )


def new_job(gateway: Gateway) -> JobMessage:
    job = submit_job(
        gateway, principal=ALICE, request=CustomVoiceRequest(text="Hello.", speaker="Ryan")
    )
    return JobMessage(job_id=job.id)


def start_held_run(
    gateway: Gateway, message: JobMessage, *, worker: str, outcomes: list[RunResult] | None = None
) -> tuple[threading.Thread, CountingSynth]:
    """Start a run on a thread and hold it inside the synthesizer until ``release`` is set;
    its result goes into ``outcomes``."""
    synth = CountingSynth()
    synth.release.clear()
    runner = make_runner(gateway, synth, worker=worker)
    found = outcomes if outcomes is not None else []
    thread = threading.Thread(target=lambda: found.append(runner.run(message)))
    thread.start()
    assert synth.entered.wait(5)
    return thread, synth


def test_success_stores_a_wav_and_finishes_the_job(gateway: Gateway, fakes: Fakes) -> None:
    message = new_job(gateway)
    result = make_runner(gateway, CountingSynth()).run(message)
    assert (result.outcome, result.ack) == (Outcome.SUCCEEDED, True)

    job = fakes.jobs.get(message.job_id)
    assert job is not None
    assert job.state is JobState.SUCCEEDED
    assert job.result is not None
    data, content_type = fakes.blobs.objects[f"audio/{job.id}/1.wav"]
    assert content_type == "audio/wav"
    samples, rate = sf.read(io.BytesIO(data))
    assert rate == job.result.sample_rate == 24000
    assert job.result.duration_s == pytest.approx(len(samples) / rate) == 0.5
    assert job.result.bytes == len(data)


def test_duplicate_delivery_synthesizes_once(gateway: Gateway) -> None:
    message = new_job(gateway)
    synth = CountingSynth()
    runner = make_runner(gateway, synth)
    first = runner.run(message)
    second = runner.run(message)
    assert first.outcome is Outcome.SUCCEEDED
    assert (second.outcome, second.ack) == (Outcome.SKIPPED, True)
    assert synth.calls == 1


def test_a_message_for_a_job_in_hand_elsewhere_is_acked_without_work(gateway: Gateway) -> None:
    message = new_job(gateway)
    worker, busy = start_held_run(gateway, message, worker="w1")
    other = CountingSynth()
    result = make_runner(gateway, other, worker="w2").run(message)
    busy.release.set()
    worker.join()
    assert result.outcome is Outcome.SKIPPED
    assert "leased by w1" in result.reason
    assert other.calls == 0


def test_unknown_job_is_skipped(gateway: Gateway) -> None:
    result = make_runner(gateway, CountingSynth()).run(JobMessage(job_id="ghost"))
    assert (result.outcome, result.ack) == (Outcome.SKIPPED, True)


def test_a_permanent_error_fails_the_job_and_acks(gateway: Gateway, fakes: Fakes) -> None:
    message = new_job(gateway)
    result = make_runner(gateway, CountingSynth(SynthesisFailed("no such voice"))).run(message)
    assert (result.outcome, result.ack) == (Outcome.FAILED, True)
    job = fakes.jobs.get(message.job_id)
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert (job.error.code, job.error.message) == ("synthesis_failed", "no such voice")


def test_a_transient_error_requeues_and_nacks_until_attempts_run_out(
    gateway: Gateway, fakes: Fakes
) -> None:
    message = new_job(gateway)
    synth = CountingSynth(BackendUnavailable("GPU out of memory"))
    runner = make_runner(gateway, synth)
    for _ in range(2):
        result = runner.run(message)
        assert (result.outcome, result.ack) == (Outcome.RETRY, False)
        job = fakes.jobs.get(message.job_id)
        assert job is not None
        assert job.state is JobState.QUEUED
    final = runner.run(message)
    assert (final.outcome, final.ack) == (Outcome.FAILED, True)
    job = fakes.jobs.get(message.job_id)
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.attempts == 3
    assert "gave up after 3 attempts" in job.error.message  # type: ignore[union-attr]


def test_a_worker_that_outlived_its_lease_does_not_overwrite_the_new_holder(
    gateway: Gateway, fakes: Fakes
) -> None:
    message = new_job(gateway)
    late: list[RunResult] = []
    worker, slow = start_held_run(gateway, message, worker="w1", outcomes=late)
    fakes.clock.advance(120)  # w1's lease is long gone
    takeover = make_runner(gateway, CountingSynth(), worker="w2").run(message)
    assert takeover.outcome is Outcome.SUCCEEDED
    won = fakes.jobs.get(message.job_id)
    slow.release.set()
    worker.join()
    assert [r.outcome for r in late] == [Outcome.SKIPPED]
    job = fakes.jobs.get(message.job_id)
    assert job == won  # the late run changed nothing of the job
    assert job is not None
    assert job.attempts == 2
    assert job.result is not None
    # Each run wrote its own object; the job names the one of the attempt that won.
    assert job.result.uri.endswith(f"audio/{job.id}/2.wav")
    assert f"audio/{job.id}/1.wav" in fakes.blobs.objects


def test_a_run_canceled_and_retried_on_the_same_worker_cannot_finish_the_new_attempt(
    gateway: Gateway, fakes: Fakes
) -> None:
    # The lease owner is the same worker id both times: only the attempt tells the runs apart.
    message = new_job(gateway)
    late: list[RunResult] = []
    worker, slow = start_held_run(gateway, message, worker="w1", outcomes=late)
    cancel_job(gateway, principal=ALICE, job_id=message.job_id)
    retry_job(gateway, principal=ALICE, job_id=message.job_id)
    second, slower = start_held_run(gateway, message, worker="w1")
    slow.release.set()  # the first run ends while the second still works
    worker.join()
    assert [r.outcome for r in late] == [Outcome.SKIPPED]
    running = fakes.jobs.get(message.job_id)
    assert running is not None
    assert (running.state, running.attempts) == (JobState.RUNNING, 3)
    slower.release.set()
    second.join()
    done = fakes.jobs.get(message.job_id)
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    assert done.result is not None
    assert done.result.uri.endswith(f"audio/{done.id}/3.wav")


def test_the_lease_is_extended_while_the_gpu_works(gateway: Gateway, fakes: Fakes) -> None:
    message = new_job(gateway)
    slow = CountingSynth()
    slow.release.clear()
    # A short lease (extended every 0.1 s) so the keeper's own wait passes quickly; the
    # extension itself is dated by the fake clock.
    runner = make_runner(gateway, slow, lease_s=0.3)
    worker = threading.Thread(target=runner.run, args=(message,))
    worker.start()
    assert slow.entered.wait(30)
    first = fakes.jobs.get(message.job_id)
    assert first is not None
    assert first.lease is not None
    fakes.clock.advance(10)  # the first lease ran out long ago by the job's clock

    def extended() -> datetime | None:
        current = fakes.jobs.get(message.job_id)
        lease = current.lease if current is not None else None
        return lease.expires_at if lease is not None and lease.expires_at > first_expiry else None

    first_expiry = first.lease.expires_at
    renewed = eventually(extended, timeout_s=30, message="the lease was never extended")
    assert renewed == fakes.clock() + timedelta(seconds=0.3)  # now + lease_s, by the fake clock
    slow.release.set()
    worker.join()
    done = fakes.jobs.get(message.job_id)
    assert done is not None
    assert done.state is JobState.SUCCEEDED  # the run that kept its lease finished the job


def test_a_message_for_a_job_routed_to_another_backend_is_acked_without_work(
    gateway: Gateway,
) -> None:
    """The Pub/Sub emulator ignores subscription filters; this check keeps workers honest."""
    message = new_job(gateway)
    synth = CountingSynth()
    runner = JobRunner(
        gateway=gateway,
        executor=synth,
        config=RunnerConfig(worker_id="rp", backend_id="runpod", lease_s=60),
    )
    result = runner.run(message)
    assert (result.outcome, result.ack) == (Outcome.SKIPPED, True)
    assert "routed to home-4090" in result.reason
    assert synth.calls == 0


def test_a_contended_store_is_a_retry_at_every_step_never_a_crashed_run(
    gateway: Gateway, fakes: Fakes
) -> None:
    message = new_job(gateway)
    fakes.jobs.contended.add(message.job_id)
    claimed = make_runner(gateway, CountingSynth()).run(message)
    assert (claimed.outcome, claimed.ack) == (Outcome.RETRY, False)
    fakes.jobs.contended.clear()

    class ContendedAtTheEnd(CountingSynth):
        def execute(self, task: Task) -> JobOutput:
            output = super().execute(task)
            fakes.jobs.contended.add(task.id)  # the finish meets a contended document
            return output

    finished = make_runner(gateway, ContendedAtTheEnd()).run(message)
    assert (finished.outcome, finished.ack) == (Outcome.RETRY, False)
    fakes.jobs.contended.clear()
    job = fakes.jobs.get(message.job_id)
    assert job is not None
    assert job.state is JobState.RUNNING  # its lease runs out and the monitor requeues it
