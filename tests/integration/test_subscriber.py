"""The 4090 subscriber on the emulators with the real engine on the tiny model."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import google.cloud.pubsub_v1 as pubsub_v1
import pytest
import soundfile as sf
import torch
from google.cloud.pubsub_v1.subscriber.futures import StreamingPullFuture
from pytest_mock import MockerFixture

from gpu_worker.bootstrap import Worker, bootstrap
from gpu_worker.runner import Outcome
from gpu_worker.synthesizer import ModelSet, Synthesizer
from infra import topology
from shared.domain.backends import BackendStatus
from shared.domain.errors import WorkerPoisoned
from shared.domain.jobs import JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import EngineKind, Settings, WorkerSettings
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from shared.wire.messages import JobMessage, job_attributes
from tests.support.contracts import validate_schema
from tests.support.engines import tiny_synthesizer
from tests.support.firestore import as_json, stored_job
from tests.support.waiting import eventually

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))


@pytest.fixture(scope="module")
def engine(tiny_model_dir: str) -> Synthesizer:
    engine = tiny_synthesizer(tiny_model_dir, kind=EngineKind.QWEN)
    engine.load()
    return engine


@pytest.fixture
def worker_settings(cloud_settings: Settings) -> Settings:
    # A subscription of its own per test, declared like the real one: the emulator keeps
    # delivering to a closed stream until the ack deadline, which would leak between tests.
    declared = topology.load().subscription("tts-jobs-home-4090")
    own = declared.model_copy(update={"name": f"home-{uuid.uuid4().hex[:8]}"})
    topology.create_subscription(
        own,
        project_id=cloud_settings.project_id,
        publisher=pubsub_v1.PublisherClient(),
        subscriber=pubsub_v1.SubscriberClient(),
    )
    return cloud_settings.model_copy(
        update={
            "worker": WorkerSettings(
                models=("tiny",), subscription=own.name, heartbeat_s=0.5, shutdown_grace_s=30
            )
        }
    )


@pytest.fixture
def worker(worker_settings: Settings, cloud_gateway: Gateway, engine: Synthesizer) -> Worker:
    return bootstrap(worker_settings, gateway=cloud_gateway, models=ModelSet([engine]))


@pytest.fixture
def serving(worker: Worker) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=worker.subscriber.serve, args=(stop,), daemon=True)
    thread.start()
    yield stop
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive()


def wait_for(predicate: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def test_a_duplicated_job_message_is_synthesized_once(
    worker: Worker,
    cloud_gateway: Gateway,
    cloud_settings: Settings,
    engine: Synthesizer,
    mocker: MockerFixture,
    serving: threading.Event,
) -> None:
    spy = mocker.spy(engine, "speak")
    job = submit_job(
        cloud_gateway,
        principal=ALICE,
        request=CustomVoiceRequest(text="Hello there.", speaker="Ryan", language="en"),
    )
    # At-least-once delivery: the same message arrives a second time.
    cloud_gateway.publisher.publish(
        cloud_settings.jobs_topic,
        JobMessage(job_id=job.id).encode(),
        attributes=job_attributes(backend=job.backend, mode=job.request.mode),
    )
    wait_for(lambda: worker.heartbeat.jobs_done >= 2)
    done = cloud_gateway.jobs.get(job.id)
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    assert spy.call_count == 1

    assert done.result is not None
    data = cloud_gateway.blobs.get(f"audio/{job.id}/1.wav")
    samples, rate = sf.read(io.BytesIO(data))
    assert rate == done.result.sample_rate == 24000
    assert done.result.duration_s == pytest.approx(len(samples) / rate, abs=1e-6)

    raw = stored_job(cloud_settings, job.id)
    validate_schema("job-document.schema.json", as_json(raw))
    assert raw["result"]["duration_s"] == done.result.duration_s

    beat = cloud_gateway.backends.get("home-4090")
    assert beat is not None
    assert beat.status is BackendStatus.ONLINE
    assert beat.capabilities.modes == ("custom_voice", "normalize", "join")
    assert beat.capabilities.api_version == 1
    validate_schema("backend-document.schema.json", as_json(beat.model_dump(mode="json")))


def test_shutdown_finishes_the_job_in_hand(
    worker: Worker,
    cloud_gateway: Gateway,
    engine: Synthesizer,
    mocker: MockerFixture,
) -> None:
    stop = threading.Event()
    real = engine.speak
    stops_pulling = mocker.spy(StreamingPullFuture, "cancel")

    def stop_mid_job(*args: Any, **kwargs: Any) -> Any:
        stop.set()  # SIGTERM arrives while the GPU works
        # ...and the worker begins to stop (it ends its pull) before the GPU is done.
        eventually(lambda: stops_pulling.call_count, message="the worker never began to stop")
        return real(*args, **kwargs)

    mocker.patch.object(engine, "speak", side_effect=stop_mid_job)
    job = submit_job(
        cloud_gateway, principal=ALICE, request=CustomVoiceRequest(text="Bye.", speaker="Eric")
    )
    thread = threading.Thread(target=worker.subscriber.serve, args=(stop,))
    thread.start()
    thread.join(timeout=90)
    assert not thread.is_alive()
    done = cloud_gateway.jobs.get(job.id)
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    beat = cloud_gateway.backends.get("home-4090")
    assert beat is not None
    assert beat.status is BackendStatus.OFFLINE


def test_a_cuda_fault_gives_the_job_back_and_stops_the_worker_unhealthy_for_a_fresh_one(
    worker_settings: Settings,
    cloud_gateway: Gateway,
    cloud_settings: Settings,
    engine: Synthesizer,
    mocker: MockerFixture,
) -> None:
    """The real exception class, raised from inside the engine's model call: the job goes back
    without spending a try, the worker says it is unhealthy and stops (its entrypoint exits
    70), and a fresh worker speaks the job."""

    def fresh_worker() -> Worker:
        # A synthesizer of its own around the loaded engine: a fault poisons the synthesizer.
        synth = Synthesizer(engine=engine.engine, max_new_tokens=2048)
        return bootstrap(worker_settings, gateway=cloud_gateway, models=ModelSet([synth]))

    model = engine.engine.model  # type: ignore[attr-defined]  # the QwenEngine's qwen model
    broken = mocker.patch.object(
        model,
        "generate_custom_voice",
        side_effect=torch.AcceleratorError("CUDA error: device-side assert triggered"),
    )
    job = submit_job(
        cloud_gateway, principal=ALICE, request=CustomVoiceRequest(text="Hi.", speaker="Ryan")
    )
    faulted: list[BaseException] = []

    def serve(worker: Worker, stop: threading.Event) -> None:
        try:
            worker.subscriber.serve(stop)
        except WorkerPoisoned as exc:
            faulted.append(exc)

    first = threading.Thread(target=serve, args=(fresh_worker(), threading.Event()))
    first.start()
    first.join(timeout=90)  # nobody sets its stop event: it stops by itself
    assert not first.is_alive()
    assert len(faulted) == 1
    assert broken.call_count == 1
    released = cloud_gateway.jobs.get(job.id)
    assert released is not None
    assert (released.state, released.attempts, released.tries) == (JobState.QUEUED, 1, 0)
    assert released.error is not None
    assert released.error.code == "worker_poisoned"
    beat = cloud_gateway.backends.get("home-4090")
    assert beat is not None
    assert beat.status is BackendStatus.UNHEALTHY
    assert beat.fault is not None
    assert "device-side assert" in beat.fault
    validate_schema("backend-document.schema.json", as_json(beat.model_dump(mode="json")))
    validate_schema("job-document.schema.json", as_json(stored_job(cloud_settings, job.id)))

    mocker.stopall()  # the supervisor's fresh process: a healthy context
    # It runs the job the nacked message brings back (run here directly: the emulator may
    # hand that message to the stream the first worker closed until its ack deadline).
    fresh = fresh_worker()
    fresh.heartbeat.beat()
    assert fresh.runner.run(JobMessage(job_id=job.id)).outcome is Outcome.SUCCEEDED
    done = cloud_gateway.jobs.get(job.id)
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    assert (done.attempts, done.tries) == (2, 1)
    healthy = cloud_gateway.backends.get("home-4090")
    assert healthy is not None
    assert healthy.fault is None
