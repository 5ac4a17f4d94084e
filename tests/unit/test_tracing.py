"""Tracing is optional and cheap: nothing recorded or exported unless asked; the context crosses
Pub/Sub as W3C ``traceparent`` attributes the job message contract allows."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.adapters import tracing
from shared.domain.modes import Mode
from shared.settings import Settings, TracingSettings
from shared.wire.messages import job_attributes
from tests.support.contracts import validate_schema


@pytest.fixture
def recorded() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)


def test_by_default_nothing_is_recorded_and_nothing_travels() -> None:
    assert Settings().tracing.exporter == "none"
    tracing.configure(Settings(), service="test")  # installs nothing
    with tracing.span("anything", job_id="j") as span:
        assert not span.is_recording()
        assert tracing.inject({"backend": "home-4090"}) == {"backend": "home-4090"}
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


def test_a_traced_publish_carries_a_traceparent_the_contract_allows(
    recorded: InMemorySpanExporter,
) -> None:
    attributes = job_attributes(backend="home-4090", mode=Mode.CUSTOM_VOICE)
    with tracing.span("POST /v1/tts/jobs") as request:
        carried = tracing.inject(attributes)
    assert set(carried) - set(attributes) == {"traceparent"}
    validate_schema("job-message-attributes.schema.json", carried)
    # The consumer's span continues the trace, as a child of the span that published.
    with tracing.consumed(carried, name="tts-jobs process", job_id="j"):
        pass
    (process,) = [s for s in recorded.get_finished_spans() if s.name == "tts-jobs process"]
    assert process.context.trace_id == request.get_span_context().trace_id
    assert process.parent is not None
    assert process.parent.span_id == request.get_span_context().span_id
    assert process.attributes == {"job_id": "j"}


def test_extract_reads_the_trace_headers_only_in_any_case(
    recorded: InMemorySpanExporter,
) -> None:
    with tracing.span("caller") as caller:
        headers = {k.title(): v for k, v in tracing.inject({}).items()}
    headers["Authorization"] = "Bearer secret"
    with tracing.span("callee", parent=tracing.extract(headers)) as callee:
        pass
    assert callee.get_span_context().trace_id == caller.get_span_context().trace_id
    assert "Authorization" not in str(recorded.get_finished_spans())


def test_a_failing_block_ends_its_span_as_an_error(recorded: InMemorySpanExporter) -> None:
    @tracing.traced("job claim")
    def claim() -> None:
        raise ValueError("contended")

    with pytest.raises(ValueError, match="contended"):
        claim()
    (span,) = recorded.get_finished_spans()
    assert span.name == "job claim"
    assert span.status.is_ok is False


def test_the_exporters_are_installable_and_the_ratio_bounded() -> None:
    importlib.import_module("opentelemetry.exporter.cloud_trace")
    assert TracingSettings(exporter="gcp", sample_ratio=0.1).sample_ratio == 0.1
    with pytest.raises(ValueError, match="less than or equal to 1"):
        TracingSettings(sample_ratio=2)
