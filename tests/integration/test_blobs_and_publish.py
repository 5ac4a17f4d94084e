"""GCS and Pub/Sub on their emulators: signed URLs serve bytes; filters route by backend."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable

import pytest
from google.cloud import pubsub_v1
from google.pubsub_v1.types import ReceivedMessage

from infra import topology
from shared.domain.errors import NotFound, PayloadTooLarge
from shared.domain.keys import Principal, Scope
from shared.domain.modes import Mode
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import Settings
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from shared.wire.messages import job_attributes
from tests.support.contracts import validate_schema
from tests.support.waiting import eventually

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))


def test_put_get_and_signed_url(cloud_gateway: Gateway) -> None:
    stored = cloud_gateway.blobs.put("audio/t.wav", b"RIFF....", content_type="audio/wav")
    assert stored.uri == "gs://tts-integration/audio/t.wav"
    assert stored.size == 8
    assert cloud_gateway.blobs.get("audio/t.wav") == b"RIFF...."
    url = cloud_gateway.blobs.signed_url("audio/t.wav", ttl_s=60)
    assert "X-Goog-Signature=" in url
    assert "X-Goog-Expires=60" in url
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback emulator
        assert response.read() == b"RIFF...."


def test_a_get_is_one_bounded_download(cloud_gateway: Gateway) -> None:
    """No metadata read first: the limit is held as the body arrives, and a missing object is
    the gateway's ``NotFound`` all the same."""
    blobs = cloud_gateway.blobs
    blobs.put("audio/big.wav", b"x" * 5000, content_type="audio/wav")
    assert blobs.get("audio/big.wav", max_bytes=5000) == b"x" * 5000
    with pytest.raises(PayloadTooLarge):
        blobs.get("audio/big.wav", max_bytes=4999)
    with pytest.raises(NotFound, match="no object"):
        blobs.get("audio/absent.wav")


def drain(
    subscriber: pubsub_v1.SubscriberClient,
    path: str,
    until: Callable[[list[ReceivedMessage]], bool] = lambda _: True,
) -> list[ReceivedMessage]:
    """Every message on the subscription (each acknowledged), once ``until`` holds of them and
    a pull comes back empty (at once: the emulator otherwise holds an empty pull for seconds)."""
    received: list[ReceivedMessage] = []

    def drained() -> bool:
        response = subscriber.pull(
            subscription=path, max_messages=100, timeout=5, return_immediately=True
        )
        if not response.received_messages:
            return until(received)
        received.extend(response.received_messages)
        subscriber.acknowledge(
            subscription=path, ack_ids=[m.ack_id for m in response.received_messages]
        )
        return False

    eventually(drained, timeout_s=30, interval_s=0.1, message=lambda: f"only {received}")
    return received


def filter_matches(expression: str, attributes: dict[str, str]) -> bool:
    """Evaluate the one filter form the topology uses: ``attributes.KEY = "VALUE"``."""
    match = re.fullmatch(r'attributes\.(\w+)\s*=\s*"([^"]*)"', expression)
    assert match, f"unsupported filter {expression!r}"
    return attributes.get(match[1]) == match[2]


def test_the_home_subscription_filters_on_the_attribute_the_router_sets(
    cloud_gateway: Gateway, cloud_settings: Settings
) -> None:
    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(cloud_settings.project_id, "tts-jobs-home-4090")
    expression = subscriber.get_subscription(subscription=path).filter
    assert expression == topology.load().subscription("tts-jobs-home-4090").filter
    drain(subscriber, path)

    job = submit_job(
        cloud_gateway, principal=ALICE, request=CustomVoiceRequest(text="Hi", speaker="Dylan")
    )

    def ours(received: list[ReceivedMessage]) -> list[ReceivedMessage]:
        return [m for m in received if json.loads(m.message.data)["job_id"] == job.id]

    [message] = ours(drain(subscriber, path, until=lambda received: bool(ours(received))))
    body = json.loads(message.message.data)
    attributes = dict(message.message.attributes)
    validate_schema("job-message.schema.json", body)
    validate_schema("job-message-attributes.schema.json", attributes)
    assert filter_matches(expression, attributes)
    # The emulator (0.8.x) ignores filters, so a message routed elsewhere would reach this
    # subscription locally; in the cloud the filter drops it, and the runner skips it anyway.
    elsewhere = job_attributes(backend="runpod", mode=Mode.CUSTOM_VOICE)
    assert not filter_matches(expression, dict(elsewhere))
