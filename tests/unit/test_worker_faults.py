"""The GPU worker survives CUDA faults and running out of GPU memory (over fakes, no model).

* A CUDA fault (the real ``torch.AcceleratorError``, or a ``RuntimeError`` that reads like one)
  gives the job back without spending a try, marks the worker unhealthy and stops it with a
  non-zero exit (the subscriber; RunPod's handler reports the job retryable and asks for a
  fresh worker).
* Out of GPU memory splits the batch and tries again once; only a line that does not fit
  alone fails.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from gpu_worker import runpod_handler
from gpu_worker.audio.encoding import Waveform
from gpu_worker.bootstrap import bootstrap
from gpu_worker.engine import Line, Speaker
from gpu_worker.runner import Outcome
from gpu_worker.runpod_handler import build_handler
from gpu_worker.synthesizer import ModelSet, Synthesizer
from shared.domain.backends import BackendConfig, BackendKind, BackendStatus
from shared.domain.catalog import Language
from shared.domain.errors import LineOutOfMemory, SynthesisFailed, WorkerPoisoned
from shared.domain.jobs import MAX_SPARED_FAULTS, JobError, JobState
from shared.domain.keys import Principal, Scope
from shared.domain.modes import ModelType
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import RunPodSettings, Settings
from shared.usecases.dispatch import Completion, complete, dispatch
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from shared.wire.messages import JobMessage
from shared.wire.runpod_io import RunPodFailure, RunPodInput, RunPodOutput, RunPodTask, SignedUrls
from shared.wire.runpod_status import RunPodStatus
from tests.support.fake_engine import FakeEngine, runner_over
from tests.support.fakes import FakeRunPod
from tests.support.gateway import Fakes, fake_gateway

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))
DEVICE_ASSERT = "CUDA error: device-side assert triggered"


def line(text: str) -> Line:
    return Line(text=text, language=Language.ENGLISH, voice=Speaker(name="ryan"))


@pytest.mark.parametrize(
    "error",
    [
        torch.AcceleratorError(DEVICE_ASSERT),
        RuntimeError(DEVICE_ASSERT),
        RuntimeError("CUDA error: an illegal memory access was encountered"),
    ],
    ids=["AcceleratorError", "device-side-assert", "illegal-access"],
)
def test_a_cuda_fault_poisons_the_synthesizer_and_nothing_more_reaches_the_gpu(
    error: Exception,
) -> None:
    engine = FakeEngine(model_type=ModelType.CUSTOM_VOICE, error=error)
    synth = Synthesizer(engine=engine, max_new_tokens=2048)
    with pytest.raises(WorkerPoisoned, match="CUDA"):
        synth.speak([line("a"), line("b")])  # not retried line by line
    engine.error = None
    with pytest.raises(WorkerPoisoned, match="an earlier CUDA fault"):
        synth.say(line("c"))
    assert engine.calls == [["a", "b"]]


def test_a_runtime_error_that_is_no_cuda_fault_still_fails_only_its_line() -> None:
    engine = FakeEngine(model_type=ModelType.CUSTOM_VOICE, errors=[RuntimeError("size mismatch")])
    result = Synthesizer(engine=engine, max_new_tokens=2048).speak([line("a")])[0]
    assert isinstance(result, SynthesisFailed)


def fault_job(gateway: Gateway) -> str:
    request = CustomVoiceRequest(text="Hello.", speaker="ryan")
    return submit_job(gateway, principal=ALICE, request=request).id


def test_a_cuda_fault_gives_the_job_back_without_spending_a_try(
    gateway: Gateway, fakes: Fakes
) -> None:
    job_id = fault_job(gateway)
    engine = FakeEngine(
        model_type=ModelType.CUSTOM_VOICE, errors=[torch.AcceleratorError(DEVICE_ASSERT)]
    )
    with pytest.raises(WorkerPoisoned):
        runner_over(gateway, engine, max_attempts=1).run(JobMessage(job_id=job_id))
    job = fakes.jobs.get(job_id)
    assert job is not None
    assert (job.state, job.attempts, job.faults, job.tries) == (JobState.QUEUED, 1, 1, 0)
    assert job.error is not None
    assert job.error.code == "worker_poisoned"
    # A fresh worker (a new engine, a new process) speaks it: one try was all it had.
    fresh = runner_over(gateway, FakeEngine(model_type=ModelType.CUSTOM_VOICE), max_attempts=1)
    assert fresh.run(JobMessage(job_id=job_id)).outcome is Outcome.SUCCEEDED


def test_a_job_that_meets_fault_after_fault_spends_its_tries_after_a_few(
    gateway: Gateway, fakes: Fakes
) -> None:
    job_id = fault_job(gateway)
    for _ in range(MAX_SPARED_FAULTS + 1):
        engine = FakeEngine(
            model_type=ModelType.CUSTOM_VOICE, error=torch.AcceleratorError(DEVICE_ASSERT)
        )
        with pytest.raises(WorkerPoisoned):
            runner_over(gateway, engine, max_attempts=1).run(JobMessage(job_id=job_id))
    job = fakes.jobs.get(job_id)
    assert job is not None
    assert (job.state, job.faults) == (JobState.FAILED, MAX_SPARED_FAULTS)
    assert job.error is not None
    assert job.error.message.startswith("gave up after 1 attempts")


def test_an_owners_retry_gives_a_job_its_spared_faults_back(gateway: Gateway, fakes: Fakes) -> None:
    job_id = fault_job(gateway)
    job = fakes.jobs.update(
        job_id, lambda j: j.claim("w1", backend="home-4090", now=fakes.clock(), lease_s=60)
    )
    error = JobError(code="worker_poisoned", message="x", retryable=True)
    job = fakes.jobs.update(
        job_id,
        lambda j: j.release("w1", attempt=1, error=error, now=fakes.clock(), spare=True),
    )
    assert (job.faults, job.tries) == (1, 0)
    job = fakes.jobs.update(
        job_id, lambda j: j.claim("w1", backend="home-4090", now=fakes.clock(), lease_s=60)
    )
    job = fakes.jobs.update(
        job_id, lambda j: j.fail("w1", attempt=2, error=error, now=fakes.clock())
    )
    assert (job.faults, job.tries) == (1, 1)
    job = fakes.jobs.update(job_id, lambda j: j.retry(now=fakes.clock()))
    assert (job.faults, job.tries) == (0, 0)


class FakeMessage:
    def __init__(self, data: bytes, message_id: str) -> None:
        self.data = data
        self.message_id = message_id
        self.attributes: dict[str, str] = {}
        self.outcome: str | None = None

    def ack(self) -> None:
        self.outcome = "ack"

    def nack(self) -> None:
        self.outcome = "nack"


class StreamingPull:
    """A subscriber client whose stream the test feeds, one message at a time."""

    def __init__(self) -> None:
        self.callback: Callable[[Any], None] | None = None
        self.subscribed = threading.Event()
        self.canceled = threading.Event()

    def subscription_path(self, project: str, name: str) -> str:
        return f"projects/{project}/subscriptions/{name}"

    def subscribe(self, path: str, *, callback: Callable[[Any], None], **_: object) -> Any:
        self.callback = callback
        self.subscribed.set()
        return self

    def deliver(self, job_id: str) -> FakeMessage:
        assert self.callback is not None
        message = FakeMessage(JobMessage(job_id=job_id).encode(), message_id=job_id)
        self.callback(message)
        return message

    # the streaming pull future
    def done(self) -> bool:
        return False

    def cancel(self) -> None:
        self.canceled.set()

    def result(self, timeout: float | None = None) -> None: ...


def test_a_cuda_fault_stops_the_subscriber_unhealthy_with_the_job_back_in_the_queue(
    settings: Settings, gateway: Gateway, fakes: Fakes
) -> None:
    engine = FakeEngine(
        model_type=ModelType.CUSTOM_VOICE, errors=[torch.AcceleratorError(DEVICE_ASSERT)]
    )
    client = StreamingPull()
    worker = bootstrap(
        settings,
        gateway=gateway,
        models=ModelSet([Synthesizer(engine=engine, max_new_tokens=2048)]),
        subscriber_client=client,
    )
    raised: list[BaseException] = []

    def serve() -> None:
        try:
            worker.subscriber.serve(threading.Event())  # no one asks it to stop
        except WorkerPoisoned as exc:
            raised.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert client.subscribed.wait(10)
    first, second = fault_job(gateway), fault_job(gateway)
    assert client.deliver(first).outcome == "nack"
    assert client.deliver(second).outcome == "nack"  # taken by no broken worker
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(raised) == 1
    assert "device-side assert" in str(raised[0])
    assert client.canceled.is_set()
    beat = fakes.backends.get("home-4090")
    assert beat is not None
    assert beat.status is BackendStatus.UNHEALTHY
    assert beat.fault is not None
    assert "device-side assert" in beat.fault
    faulted, untouched = fakes.jobs.get(first), fakes.jobs.get(second)
    assert faulted is not None
    assert untouched is not None
    assert (faulted.state, faulted.tries, faulted.faults) == (JobState.QUEUED, 0, 1)
    assert (untouched.state, untouched.attempts) == (JobState.QUEUED, 0)
    assert engine.calls == [["Hello."]]


def runpod_job(job_id: str) -> dict[str, Any]:
    request = CustomVoiceRequest(text="Hello.", speaker="ryan")
    task = RunPodTask(id=job_id, owner="alice", request=request, attempt=1)
    payload = RunPodInput(task=task, urls=SignedUrls()).model_dump(mode="json")
    return {"id": f"rp-{job_id}", "input": payload}


def test_a_cuda_fault_on_runpod_is_a_retryable_failure_that_asks_for_a_fresh_worker() -> None:
    engine = FakeEngine(
        model_type=ModelType.CUSTOM_VOICE, errors=[torch.AcceleratorError(DEVICE_ASSERT)]
    )
    handler = build_handler(
        Settings(bucket="test-bucket"),
        models=ModelSet([Synthesizer(engine=engine, max_new_tokens=2048)]),
    )
    for job_id in ("job1", "job2"):  # the second never reaches the GPU
        output = handler(runpod_job(job_id))
        assert output["refresh_worker"] is True
        assert output["job_id"] == job_id
        assert output["failure"]["code"] == "worker_poisoned"
        assert output["failure"]["retryable"] is True
    assert engine.calls == [["Hello."]]


def test_the_runpod_worker_stops_its_loop_after_a_fault_and_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = FakeEngine(
        model_type=ModelType.CUSTOM_VOICE, errors=[None, torch.AcceleratorError(DEVICE_ASSERT)]
    )
    models = ModelSet([Synthesizer(engine=engine, max_new_tokens=2048)])
    refresh: list[object] = []

    def start(config: dict[str, Any]) -> None:
        """The SDK's loop: it awaits its (async) handler, and reads its refresh_worker setting
        after each job."""
        for job_id in ("job1", "job2", "job3"):
            asyncio.run(config["handler"](runpod_job(job_id)))
            refresh.append(config.get("refresh_worker", False))
            if refresh[-1]:
                return

    stub = SimpleNamespace(serverless=SimpleNamespace(start=start))
    monkeypatch.setitem(sys.modules, "runpod", stub)
    monkeypatch.setattr(runpod_handler, "load_models", lambda _settings: models)
    monkeypatch.setattr(runpod_handler, "configure_logging", lambda: None)
    assert runpod_handler.main() == runpod_handler.EXIT_POISONED == 70
    assert refresh == [False, True]  # job1 spoken (its upload failed: no URLs); job2 faulted
    assert engine.calls == [["Hello."], ["Hello."]]


def test_the_dispatcher_spares_the_attempt_of_a_job_a_runpod_worker_fault_ended(
    fakes: Fakes,
) -> None:
    runpod = RunPodSettings(
        endpoint_id="ep1",
        api_key="k",
        webhook_url="https://hooks.example/runpod",
        webhook_secret="s3cret",
        max_attempts=1,
    )
    backends = (BackendConfig(id="runpod", kind=BackendKind.RUNPOD, priority=20),)
    gw = fake_gateway(Settings(bucket="test-bucket", backends=backends, runpod=runpod), fakes)
    job_id = fault_job(gw)
    dispatch(gw, FakeRunPod(), JobMessage(job_id=job_id))
    failure = RunPodFailure(code="worker_poisoned", message=DEVICE_ASSERT, retryable=True)
    output = RunPodOutput(job_id=job_id, failure=failure).model_dump(mode="json")
    status = RunPodStatus(id="rp-1", status="COMPLETED", output=output)
    assert complete(gw, job_id=job_id, status=status) is Completion.RETRIED  # one try, unspent
    job = fakes.jobs.get(job_id)
    assert job is not None
    assert (job.state, job.tries, job.faults) == (JobState.QUEUED, 0, 1)


# -- out of GPU memory --------------------------------------------------------------------


def test_out_of_memory_splits_the_batch_and_only_a_line_too_big_alone_fails() -> None:
    engine = FakeEngine(
        model_type=ModelType.CUSTOM_VOICE, out_of_memory_above=2, never_fits=frozenset({"huge"})
    )
    results = Synthesizer(engine=engine, max_new_tokens=2048).speak(
        [line("a"), line("b"), line("c"), line("huge")]
    )
    assert engine.calls == [
        ["a", "b", "c", "huge"],  # out of memory
        ["a", "b"],
        ["c", "huge"],  # out of memory again: the half is split
        ["c"],
        ["huge"],  # alone, and still too big: it fails, alone
    ]
    assert [type(r) for r in results] == [Waveform, Waveform, Waveform, LineOutOfMemory]
    assert "does not fit the GPU's memory even alone" in str(results[3])


def test_a_lone_line_out_of_memory_once_is_tried_again_once() -> None:
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
    engine = FakeEngine(model_type=ModelType.CUSTOM_VOICE, errors=[oom])
    result = Synthesizer(engine=engine, max_new_tokens=2048).speak([line("a")])[0]
    assert isinstance(result, Waveform)
    assert engine.calls == [["a"], ["a"]]
