"""One job through the emulators is one trace: the API request (the deployed entry point, through
functions-framework), the publish, Pub/Sub carrying ``traceparent``, the worker's claim,
synthesis (tiny model), upload and completion, and the result's announcement. Spans are kept
by OpenTelemetry's in-memory exporter; nothing is exported anywhere."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import functions_framework
import google.cloud.pubsub_v1 as pubsub_v1
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gpu_worker.bootstrap import Worker, bootstrap
from gpu_worker.synthesizer import ModelSet, Synthesizer
from infra import topology
from shared.adapters import tracing
from shared.domain.jobs import JobState
from shared.domain.keys import Scope, new_api_key
from shared.settings import EngineKind, Settings, WorkerSettings
from shared.usecases.gateway import Gateway
from tests.support.engines import tiny_synthesizer

SOURCE = Path(__file__).resolve().parents[2] / "functions" / "main.py"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # always on: the test's one trace is recorded whole
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)
    provider.shutdown()


@pytest.fixture
def serving_worker(
    cloud_settings: Settings, cloud_gateway: Gateway, tiny_model_dir: str
) -> Iterator[Worker]:
    # A subscription of its own, declared like the real one (see test_subscriber.py).
    declared = topology.load().subscription("tts-jobs-home-4090")
    own = declared.model_copy(update={"name": f"trace-{uuid.uuid4().hex[:8]}"})
    topology.create_subscription(
        own,
        project_id=cloud_settings.project_id,
        publisher=pubsub_v1.PublisherClient(),
        subscriber=pubsub_v1.SubscriberClient(),
    )
    settings = cloud_settings.model_copy(
        update={
            "worker": WorkerSettings(
                models=("tiny",), subscription=own.name, heartbeat_s=0.5, shutdown_grace_s=30
            )
        }
    )
    engine: Synthesizer = tiny_synthesizer(tiny_model_dir, kind=EngineKind.QWEN)
    engine.load()
    worker = bootstrap(settings, gateway=cloud_gateway, models=ModelSet([engine]))
    stop = threading.Event()
    thread = threading.Thread(target=worker.subscriber.serve, args=(stop,), daemon=True)
    thread.start()
    yield worker
    stop.set()
    thread.join(timeout=60)


def _one(found: list[ReadableSpan], name: str) -> ReadableSpan:
    named = [s for s in found if s.name == name]
    assert len(named) == 1, (name, [s.name for s in found])
    return named[0]


def _at(span: ReadableSpan, *, end: bool = False) -> int:
    """When the span started (or ended), in nanoseconds."""
    at = span.end_time if end else span.start_time
    assert at is not None
    return at


def _parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_one_job_is_one_trace_from_the_api_request_to_the_worker_s_completion(
    spans: InMemorySpanExporter,
    serving_worker: Worker,
    cloud_settings: Settings,
    cloud_gateway: Gateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TTS_BUCKET", cloud_settings.bucket)
    monkeypatch.setenv("TTS_COLLECTION_PREFIX", cloud_settings.collection_prefix)
    app = functions_framework.create_app(target="api", source=str(SOURCE))  # type: ignore[no-untyped-call]
    api = app.test_client()
    secret, record = new_api_key(
        owner="tracy", scopes=frozenset({Scope.USER}), now=cloud_gateway.clock()
    )
    cloud_gateway.keys.put(record)

    response = api.post(
        "/v1/tts/jobs",
        json={"text": "Followed all the way.", "speaker": "Ryan", "language": "en"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 202
    job_id = response.get_json()["id"]

    deadline = time.monotonic() + 120
    while True:
        job = cloud_gateway.jobs.get(job_id)
        done = [
            s
            for s in spans.get_finished_spans()
            if s.name == "tts-jobs process" and (s.attributes or {}).get("job_id") == job_id
        ]
        if job is not None and job.state.terminal and done:
            break
        assert time.monotonic() < deadline, "the job or its worker span never finished"
        time.sleep(0.2)
    assert job.state is JobState.SUCCEEDED

    finished = list(spans.get_finished_spans())
    request = _one([s for s in finished if s.kind is SpanKind.SERVER], "POST /v1/tts/jobs")
    trace_id = request.context.trace_id
    ours = [s for s in finished if s.context.trace_id == trace_id]
    assert request.parent is None  # the trace starts at the API request

    publish = next(s for s in ours if s.name == "tts-jobs publish")
    assert publish.kind is SpanKind.PRODUCER
    assert _parent_of(publish) == request.context.span_id

    # Across Pub/Sub: the worker's span continues the publisher's (traceparent attribute).
    process = _one(ours, "tts-jobs process")
    assert process.kind is SpanKind.CONSUMER
    assert process.parent is not None
    assert process.parent.is_remote
    assert _parent_of(process) == publish.context.span_id

    claim, synthesis, completion = (
        _one(ours, name) for name in ("job claim", "job synthesis", "job completion")
    )
    for step in (claim, synthesis, completion):
        assert _parent_of(step) == process.context.span_id, step.name
    upload = _one(ours, "job upload")
    assert _parent_of(upload) == synthesis.context.span_id
    assert _at(claim, end=True) <= _at(synthesis)
    assert _at(upload, end=True) <= _at(completion)
    # Finishing announces the result, in the same trace.
    announce = _one(ours, "tts-results publish")
    assert _parent_of(announce) == completion.context.span_id
    # From the request to the worker's completion, in that order.
    assert _at(request) <= _at(publish) <= _at(process) <= _at(completion, end=True)
    assert not [s.name for s in ours if s.status.is_ok is False]
