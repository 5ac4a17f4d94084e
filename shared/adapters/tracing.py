"""Traces: one per job, from the API call through Pub/Sub to the worker's completion.

OpenTelemetry. ``TTS_TRACING__EXPORTER=gcp`` (Terraform sets it) exports to Cloud Trace;
``console`` prints spans (local debugging); ``none``, the default, installs nothing, so every
span below is OpenTelemetry's non-recording no-op and costs next to nothing (the SDK and the
exporter are not even imported).

Across Pub/Sub the context travels as W3C Trace Context message attributes (``traceparent``,
``tracestate``): the publisher injects the current one, the worker extracts it and runs the job
under it, so the API request, the publish, the worker's claim, synthesis, upload and completion
are one trace. Sampling is decided once, where the trace starts (an incoming ``traceparent``,
such as Cloud Run's frontend sets, or else ``TTS_TRACING__SAMPLE_RATIO``), and every later span
follows it (parent-based).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from opentelemetry import context, trace
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.settings import Settings

TRACER_NAME = "tts-gateway"
TRACE_ATTRIBUTES = ("traceparent", "tracestate")
"""The message attributes (and HTTP headers) the context travels in."""

SpanKind = trace.SpanKind

_propagator = TraceContextTextMapPropagator()
_provider: trace.TracerProvider | None = None
_lock = threading.Lock()

P = ParamSpec("P")
R = TypeVar("R")


def configure(settings: Settings, *, service: str) -> None:
    """Install the exporter the settings name, once per process (later calls change nothing).
    ``none`` installs nothing at all."""
    global _provider
    exporter_name = settings.tracing.exporter
    if exporter_name == "none":
        return
    with _lock:
        if _provider is not None:
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        exporter: SpanExporter
        if exporter_name == "gcp":
            from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

            exporter = CloudTraceSpanExporter(project_id=settings.project_id)  # type: ignore[no-untyped-call]
        else:
            exporter = ConsoleSpanExporter()
        provider = TracerProvider(
            resource=Resource.create({"service.name": service}),
            sampler=ParentBased(TraceIdRatioBased(settings.tracing.sample_ratio)),
        )
        # Batched in a background thread: a request never waits on Cloud Trace. (A span ended
        # just before Cloud Run reclaims an idle instance can be lost.)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        _provider = provider


def use_provider(provider: trace.TracerProvider | None) -> None:
    """Spans go to ``provider`` (tests: an SDK provider with an in-memory exporter); ``None``
    goes back to the global one (a no-op unless something installed another)."""
    global _provider
    with _lock:
        _provider = provider


def tracer() -> trace.Tracer:
    return (_provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME)


def inject(attributes: Mapping[str, str]) -> dict[str, str]:
    """``attributes`` plus the current trace context (nothing added outside a recorded span)."""
    carrier = dict(attributes)
    _propagator.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str]) -> context.Context:
    """The trace context ``carrier`` holds (message attributes or HTTP headers), or none."""
    found = {k.lower(): v for k, v in carrier.items() if k.lower() in TRACE_ATTRIBUTES}
    return _propagator.extract(found)


Attribute = str | int | float | bool | None


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: context.Context | None = None,
    attributes: Mapping[str, Attribute] | None = None,
    **fields: Attribute,
) -> Iterator[trace.Span]:
    """A span around the block, current inside it; an exception ends it with an error status
    (and is raised as ever). Its attributes: ``attributes`` (dotted OpenTelemetry names) and
    ``fields`` (``job_id=...``); ``None`` values are left out."""
    merged = {**(attributes or {}), **fields}
    with tracer().start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes={k: v for k, v in merged.items() if v is not None},
        record_exception=True,
        set_status_on_exception=True,
    ) as current:
        yield current


def traced(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The decorated function runs in a span of this name."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with span(name):
                return function(*args, **kwargs)

        return wrapper

    return decorate


@contextmanager
def consumed(
    message_attributes: Mapping[str, str], *, name: str, **fields: Attribute
) -> Iterator[trace.Span]:
    """Processing one Pub/Sub message: a consumer span whose parent is the context the message
    carries, so the work joins the trace of the request that published it."""
    parent = extract(message_attributes)
    with span(name, kind=SpanKind.CONSUMER, parent=parent, attributes=fields) as current:
        yield current


def failed(current: trace.Span, description: str) -> None:
    """Mark ``current`` as failed without an exception (an error answer, a failed job)."""
    current.set_status(Status(StatusCode.ERROR, description))
