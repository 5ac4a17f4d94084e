"""Pub/Sub publisher."""

from __future__ import annotations

from collections.abc import Mapping

import google.cloud.pubsub_v1 as pubsub_v1
from google.api_core import exceptions as gexc

from shared.adapters import tracing
from shared.adapters.errors import translated
from shared.domain.errors import BackendUnavailable, TransientError


def low_latency_publisher() -> pubsub_v1.PublisherClient:
    # One job per message: waiting to fill a batch only adds latency to every submit.
    return pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1),
    )


class PubSubPublisher:
    def __init__(
        self, client: pubsub_v1.PublisherClient, *, project_id: str, timeout_s: float = 5.0
    ) -> None:
        # A caller waits for the publish inside an HTTP request: give up early and let the
        # core retry or leave the job queued, rather than hold the request for minutes.
        self._client = client
        self._project_id = project_id
        self._timeout_s = timeout_s

    def publish(self, topic: str, data: bytes, *, attributes: Mapping[str, str]) -> str:
        """The message carries the current trace context (``traceparent``), so whoever takes
        it continues the publisher's trace."""
        path = self._client.topic_path(self._project_id, topic)
        with (
            tracing.span(
                f"{topic} publish",
                kind=tracing.SpanKind.PRODUCER,
                attributes={"messaging.system": "gcp_pubsub", "messaging.destination.name": topic},
            ) as span,
            translated(f"publish to {topic}", transient=BackendUnavailable),
        ):
            carried = tracing.inject(attributes)
            try:
                future = self._client.publish(path, data, timeout=self._timeout_s, **carried)
                message_id: str = future.result(timeout=self._timeout_s)
            except gexc.NotFound as exc:
                raise TransientError(f"topic {topic} does not exist") from exc
            span.set_attribute("messaging.message.id", message_id)
        return message_id
