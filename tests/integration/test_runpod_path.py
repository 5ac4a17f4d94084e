"""The RunPod backend for real: the one handler under the runpod SDK's local test API (behind
a RunPod-cloud-compatible endpoint), the tiny models, the GCS emulator through signed URLs
only, the dispatcher's real client, and the webhook function under functions-framework.

Also failover: the 4090 stops heartbeating with jobs queued for it; the monitor moves them to
RunPod, which runs them; when the 4090 comes back and gets the old messages, it does nothing.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import functions_framework
import google.cloud.pubsub_v1 as pubsub_v1
import numpy as np
import pytest
import soundfile as sf
from pytest_mock import MockerFixture
from werkzeug.serving import make_server

from gpu_worker.heartbeat import Heartbeat
from gpu_worker.runner import JobRunner, Outcome, RunnerConfig
from infra import topology
from infra.processes import free_port
from infra.runpod_local import LocalRunPod
from shared.adapters.runpod_api import RunPodClient
from shared.bootstrap import build_gateway
from shared.domain.audio_formats import AudioFormat, part_object_name
from shared.domain.backends import BackendConfig, BackendKind
from shared.domain.jobs import Job, JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import Settings
from shared.usecases.dispatch import Dispatch, dispatch
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from shared.usecases.monitor import run_monitor
from shared.wire.bodies import JobOptions
from shared.wire.messages import JobMessage
from tests.support.contracts import validate_schema
from tests.support.firestore import as_json, stored_job
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))
HOME = BackendConfig(id="home-4090", kind=BackendKind.HOME_GPU, priority=10)
RUNPOD = BackendConfig(id="runpod", kind=BackendKind.RUNPOD, priority=20)
SECRET = "webhook-secret-for-tests"


@pytest.fixture(scope="module")
def local_runpod(
    tiny_models_dir: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalRunPod]:
    # The RunPod worker gets no Google settings at all: only what the task input carries.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TTS_", "GOOGLE", "PUBSUB_", "FIRESTORE_", "STORAGE_"))
    }
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "TTS_WORKER__MODELS": json.dumps(list(tiny_models_dir.values())),
            "TTS_WORKER__DEVICE": "cpu",
        }
    )
    handler = [sys.executable, "-m", "gpu_worker.runpod_handler"]
    with LocalRunPod(handler=handler, env=env, log_dir=tmp_path_factory.mktemp("rp")) as running:
        yield running


def serve(app: object) -> tuple[str, threading.Thread, object]:
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return f"http://127.0.0.1:{port}/", thread, server


@pytest.fixture
def settings(
    cloud_settings: Settings, local_runpod: LocalRunPod, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """Settings shared by this process and the webhook function, which reads the environment."""
    webhook_app = None
    env = {
        "TTS_BUCKET": cloud_settings.bucket,
        "TTS_COLLECTION_PREFIX": cloud_settings.collection_prefix,
        "TTS_BACKENDS": json.dumps([HOME.model_dump(), RUNPOD.model_dump()]),
        "TTS_RUNPOD__ENDPOINT_ID": local_runpod.endpoint_id,
        "TTS_RUNPOD__API_KEY": local_runpod.api_key,
        "TTS_RUNPOD__BASE_URL": local_runpod.base_url,
        "TTS_RUNPOD__WEBHOOK_SECRET": SECRET,
        "TTS_MONITOR__STALE_AFTER_S": "1.0",
        "TTS_MONITOR__WEBHOOK_GRACE_S": "2.0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    webhook_app = functions_framework.create_app(
        target="runpod_webhook", source=str(ROOT / "functions" / "runpod.py")
    )
    url, _, server = serve(webhook_app)
    monkeypatch.setenv("TTS_RUNPOD__WEBHOOK_URL", url)
    yield Settings()
    server.shutdown()  # type: ignore[attr-defined]


@pytest.fixture
def gw(settings: Settings) -> Gateway:
    return build_gateway(settings)


@pytest.fixture
def client(settings: Settings) -> RunPodClient:
    rp = settings.runpod
    return RunPodClient(
        base_url=rp.base_url,
        endpoint_id=rp.endpoint_id,
        api_key=rp.api_key.get_secret_value(),
        backoff_s=0.05,
    )


def wait_for(
    gw: Gateway,
    job_id: str,
    *,
    states: set[JobState],
    announced: bool = False,
    timeout_s: float = 60,
) -> Job:
    """Polls until the job is in one of ``states`` (and, if asked, its result is published)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = gw.jobs.get(job_id)
        assert job is not None
        settled = job.state in states and not (announced and job.result_pending)
        if settled or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def runpod_job(
    gw: Gateway,
    *,
    seed: int = 3,
    request: CustomVoiceRequest | None = None,
    options: JobOptions | None = None,
) -> Job:
    """A job routed to RunPod (the 4090 never reported here, so it would be chosen first)."""
    request = request or CustomVoiceRequest(text="Hello from RunPod.", speaker="ryan", seed=seed)
    job = submit_job(gw, principal=ALICE, request=request, options=options or JobOptions())
    if job.backend != "runpod":
        job = gw.jobs.update(job.id, lambda j: j.reroute("runpod", now=gw.clock()))
    return job


def test_a_job_runs_on_runpod_and_the_webhook_finishes_it(
    gw: Gateway, client: RunPodClient, settings: Settings, local_runpod: LocalRunPod
) -> None:
    job = runpod_job(gw)
    assert dispatch(gw, client, JobMessage(job_id=job.id)) is Dispatch.DISPATCHED
    done = wait_for(gw, job.id, states={JobState.SUCCEEDED, JobState.FAILED})
    assert done.state is JobState.SUCCEEDED, done.error
    assert done.result is not None
    validate_schema("job-document.schema.json", as_json(stored_job(settings, job.id)))
    audio = gw.blobs.get(done.result.uri.removeprefix(f"gs://{settings.bucket}/"))
    samples, rate = sf.read(io.BytesIO(audio))
    assert rate == done.result.sample_rate == 24000
    assert len(audio) == done.result.bytes
    assert done.result.duration_s == pytest.approx(len(samples) / rate, abs=1e-6)
    assert local_runpod.webhooks_sent[-1]["status"] == "COMPLETED"


def test_a_streamed_job_on_runpod_publishes_its_pieces_through_signed_urls(
    gw: Gateway,
    client: RunPodClient,
    settings: Settings,
    local_runpod: LocalRunPod,
) -> None:
    """More pieces than signed part URLs: the rest go into the last part, and the pieces end to
    end are the job's audio."""
    streaming = Settings(runpod=settings.runpod.model_copy(update={"stream_parts": 2}))
    gw = dataclasses.replace(gw, settings=streaming)
    # Over 600 characters: three sentence groups at the handler's 300, one more than the URLs.
    text = " ".join(f"Piece number {i} is spoken here." for i in range(24))
    request = CustomVoiceRequest(
        text=text, speaker="ryan", seed=5, format=AudioFormat.PCM, stream=True
    )
    job = runpod_job(gw, request=request)
    assert dispatch(gw, client, JobMessage(job_id=job.id)) is Dispatch.DISPATCHED
    done = wait_for(gw, job.id, states={JobState.SUCCEEDED, JobState.FAILED})
    assert done.state is JobState.SUCCEEDED, done.error
    assert done.result is not None
    assert done.result.parts == 2
    pieces = [
        gw.blobs.get(
            part_object_name(
                prefix="audio/", job_id=job.id, attempt=1, index=i, fmt=AudioFormat.PCM
            )
        )
        for i in range(2)
    ]
    whole = gw.blobs.get(done.result.uri.removeprefix(f"gs://{settings.bucket}/"))
    joined = np.frombuffer(b"".join(pieces), dtype="<i2").astype(np.int32)
    expected = np.frombuffer(whole, dtype="<i2").astype(np.int32)
    assert len(joined) == len(expected)
    assert np.abs(joined - expected).max() <= 1  # two encoders may round a sample differently


def test_overload_is_retried_and_a_bad_webhook_secret_changes_nothing(
    gw: Gateway, client: RunPodClient, local_runpod: LocalRunPod
) -> None:
    local_runpod.fail_next_runs(429, 2)
    local_runpod.webhook_headers = {}
    job = runpod_job(gw)
    assert dispatch(gw, client, JobMessage(job_id=job.id)) is Dispatch.DISPATCHED
    assert wait_for(gw, job.id, states={JobState.SUCCEEDED}).state is JobState.SUCCEEDED

    # A forged webhook for a running job: refused, the job untouched.
    forged = runpod_job(gw, seed=4)
    local_runpod.drop_webhooks = True
    try:
        assert dispatch(gw, client, JobMessage(job_id=forged.id)) is Dispatch.DISPATCHED
        base = gw.settings.runpod.webhook_url
        response = client._session.post(
            f"{base}?job={forged.id}&token={'0' * 64}",
            json={"id": "x", "status": "COMPLETED", "output": {"job_id": forged.id}},
            timeout=10,
        )
        assert response.status_code == 401
        running = gw.jobs.get(forged.id)
        assert running is not None
        assert running.state is not JobState.SUCCEEDED
        # The real webhook never comes: the monitor polls /status after the grace period.
        deadline = time.monotonic() + 30
        while (current := gw.jobs.get(forged.id)) is not None and not current.state.terminal:
            assert time.monotonic() < deadline, "the monitor never finished the job"
            time.sleep(0.5)
            run_monitor(gw, runpod=client)
        assert current is not None
        assert current.state is JobState.SUCCEEDED
    finally:
        local_runpod.drop_webhooks = False


def test_failover_from_a_silent_4090_to_runpod_and_no_second_synthesis(
    gw: Gateway,
    client: RunPodClient,
    settings: Settings,
    mocker: MockerFixture,
) -> None:
    # The 4090's own subscription, declared like the real one, created before the jobs.
    declared = topology.load().subscription("tts-jobs-home-4090")
    home_sub = declared.model_copy(update={"name": f"home-{uuid.uuid4().hex[:8]}"})
    topology.create_subscription(
        home_sub,
        project_id=settings.project_id,
        publisher=pubsub_v1.PublisherClient(),
        subscriber=pubsub_v1.SubscriberClient(),
    )
    # RunPod's filtered push subscription, pushing to the dispatcher function.
    dispatcher_app = functions_framework.create_app(
        target="runpod_dispatch",
        source=str(ROOT / "functions" / "runpod.py"),
        signature_type="cloudevent",
    )
    dispatcher_url, _, dispatcher_server = serve(dispatcher_app)
    runpod_sub = topology.load().subscription("tts-jobs-runpod")
    topology.create_subscription(
        runpod_sub.model_copy(update={"name": f"runpod-{uuid.uuid4().hex[:8]}"}),
        project_id=settings.project_id,
        publisher=pubsub_v1.PublisherClient(),
        subscriber=pubsub_v1.SubscriberClient(),
        push_endpoint=dispatcher_url,
    )

    # Queued for the 4090 while it has not reported yet (trusted on its configuration): a
    # heartbeat beating before the submits could already be stale (1 s) when they route.
    jobs = [
        submit_job(
            gw,
            principal=ALICE,
            request=CustomVoiceRequest(text=f"Line {i}.", speaker="eric", seed=i),
        )
        for i in range(2)
    ]
    assert {j.backend for j in jobs} == {"home-4090"}
    beating = threading.Event()
    heartbeat = Heartbeat(
        store=gw.backends, backend_id="home-4090", kind=BackendKind.HOME_GPU, worker_id="home-1",
        modes=("custom_voice",), models=("tiny",), device="cpu", clock=gw.clock,
        interval_s=0.5,
    )  # fmt: skip
    beater = threading.Thread(target=heartbeat.run, args=(beating,))
    beater.start()
    try:
        eventually(lambda: gw.backends.get("home-4090"), timeout_s=30, message="no heartbeat")
    finally:
        beating.set()  # heard once, the 4090 goes silent with its jobs queued
        beater.join()

    # The monitor's passes, as its scheduler would run them, until both jobs are done: the
    # heartbeat goes stale after TTS_MONITOR__STALE_AFTER_S of silence (1 s here).
    offline: list[str] = []
    rerouted: list[str] = []

    def both_succeeded() -> bool:
        report = run_monitor(gw, runpod=client)
        offline.extend(report.offline)
        rerouted.extend(report.rerouted)
        states = [gw.jobs.get(j.id) for j in jobs]
        return all(s is not None and s.state is JobState.SUCCEEDED for s in states)

    eventually(
        both_succeeded,
        timeout_s=120,
        interval_s=0.25,
        message=lambda: f"{[gw.jobs.get(j.id) for j in jobs]}",
    )
    dispatcher_server.shutdown()  # type: ignore[attr-defined]
    # The silence was noticed once, and each queued job moved once, by the monitor.
    assert offline == ["home-4090"]
    assert sorted(rerouted) == sorted(j.id for j in jobs)
    for job in jobs:
        done = gw.jobs.get(job.id)
        assert done is not None
        assert (done.backend, done.attempts) == ("runpod", 1)

    # The 4090 comes back and receives the messages published to it before the failover.
    executor = mocker.Mock()
    runner = JobRunner(
        gateway=gw,
        executor=executor,
        config=RunnerConfig(worker_id="home-1", backend_id="home-4090", lease_s=30),
    )
    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(settings.project_id, home_sub.name)
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while not {j.id for j in jobs} <= seen:
        assert time.monotonic() < deadline, f"the old messages never came: {seen}"
        received = subscriber.pull(subscription=path, max_messages=10, timeout=10)
        for message in received.received_messages:
            result = runner.run(JobMessage.decode(message.message.data))
            assert result.outcome is Outcome.SKIPPED
            seen.add(result.job_id)
    executor.execute.assert_not_called()


def test_runpod_and_the_4090_write_the_same_job_document(
    gw: Gateway,
    client: RunPodClient,
    settings: Settings,
    tiny_models_dir: dict[str, str],
) -> None:
    """One request, one seed, one model, two backends: the same document, the same audio."""
    from gpu_worker.bucket_io import BucketIO
    from gpu_worker.prompt_cache import PromptCache
    from gpu_worker.synthesizer import ModelSet
    from gpu_worker.tasks import TaskExecutor
    from shared.settings import EngineKind
    from tests.support.engines import tiny_synthesizer

    engine = tiny_synthesizer(tiny_models_dir["custom_voice"], kind=EngineKind.QWEN)
    engine.load()
    runner = JobRunner(
        gateway=gw,
        executor=TaskExecutor(
            models=ModelSet([engine]),
            io=BucketIO(gateway=gw, prompts=PromptCache(max_bytes=0, max_file_bytes=1 << 20)),
            limits=settings.voices,
            max_chunk_chars=settings.worker.max_chunk_chars,
            max_join_s=settings.worker.max_join_s,
        ),
        config=RunnerConfig(worker_id="home-1", backend_id="home-4090", lease_s=30),
    )
    request = CustomVoiceRequest(text="The same words, twice.", speaker="aiden", seed=21)
    home = submit_job(gw, principal=ALICE, request=request)
    if home.backend != "home-4090":
        home = gw.jobs.update(home.id, lambda j: j.reroute("home-4090", now=gw.clock()))
    assert runner.run(JobMessage(job_id=home.id)).outcome is Outcome.SUCCEEDED
    # The same request again: kept from the cache, so that RunPod really makes it.
    away = runpod_job(gw, request=request, options=JobOptions(cache=False))
    assert dispatch(gw, client, JobMessage(job_id=away.id)) is Dispatch.DISPATCHED
    # The webhook handler publishes the result after the state is stored: wait for both, so
    # the two documents are compared at the same point of their lives.
    done = wait_for(gw, away.id, states={JobState.SUCCEEDED}, announced=True)
    assert done.state is JobState.SUCCEEDED
    assert not done.result_pending

    docs = [as_json(stored_job(settings, job_id)) for job_id in (home.id, away.id)]
    for doc in docs:
        validate_schema("job-document.schema.json", doc)
    assert docs[0].keys() == docs[1].keys()
    varying = {
        "id",
        "backend",
        "created_at",
        "updated_at",
        "state_times",
        "runpod_id",
        "expires_at",
    }
    varying |= {"cache_key"}  # the second was kept from the cache on purpose
    assert {k: v for k, v in docs[0].items() if k not in varying | {"result"}} == {
        k: v for k, v in docs[1].items() if k not in varying | {"result"}
    }
    results = [dict(doc["result"]) for doc in docs]
    for result, job_id in zip(results, (home.id, away.id), strict=True):
        assert result.pop("uri") == f"gs://{settings.bucket}/audio/{job_id}/1.wav"
    assert results[0] == results[1]
    audio = [gw.blobs.get(f"audio/{job_id}/1.wav") for job_id in (home.id, away.id)]
    assert audio[0] == audio[1]


def test_a_voice_made_on_runpod_is_registered_by_its_storage_event(
    gw: Gateway, client: RunPodClient, settings: Settings
) -> None:
    import numpy as np

    from shared.adapters.clients import storage_client
    from shared.domain.voices import VoiceState
    from shared.usecases.jobs import create_voice
    from shared.usecases.registry import Registration, StoredObject, on_object_finalized
    from shared.wire.bodies import CreateVoiceBody

    t = np.arange(48000, dtype=np.float32) / 24000
    buffer = io.BytesIO()
    sf.write(buffer, 0.2 * np.sin(2 * np.pi * 150 * t), 24000, format="FLAC")
    body = CreateVoiceBody(name="Remote", ref_text="A line.", character="sailor")
    job = create_voice(gw, principal=ALICE, body=body, audio=buffer.getvalue())
    if job.backend != "runpod":
        job = gw.jobs.update(job.id, lambda j: j.reroute("runpod", now=gw.clock()))
    assert dispatch(gw, client, JobMessage(job_id=job.id)) is Dispatch.DISPATCHED
    done = wait_for(gw, job.id, states={JobState.SUCCEEDED, JobState.FAILED})
    assert done.state is JobState.SUCCEEDED, done.error
    assert done.voice_id is not None

    # What GCS would announce for the .pt RunPod uploaded through its signed URL.
    name = f"{settings.voices.prefix}{job.id}.pt"
    blob = storage_client(settings).bucket(settings.bucket).get_blob(name)
    assert blob is not None
    event = StoredObject(
        bucket=settings.bucket, name=name, generation=blob.generation, size=blob.size
    )
    assert on_object_finalized(gw, event) is Registration.REGISTERED
    voice = gw.voices.get(done.voice_id)
    assert voice is not None
    assert (voice.state, voice.name, voice.owner) == (VoiceState.ACTIVE, "Remote", "alice")
    assert voice.traits.character == "sailor"
    assert voice.reference_path == f"{settings.voices.prefix}{job.id}.ref.flac"
    assert gw.blobs.get(voice.reference_path) == buffer.getvalue()
