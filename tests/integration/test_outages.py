"""What callers see when a Google dependency is down: a typed transient error, quickly."""

from __future__ import annotations

import time

import google.cloud.pubsub_v1 as pubsub_v1
import pytest

from infra.processes import free_port
from shared.adapters.pubsub import PubSubPublisher
from shared.domain.errors import TransientError


def test_publishing_to_a_dead_pubsub_fails_transiently_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    publisher = PubSubPublisher(pubsub_v1.PublisherClient(), project_id="p", timeout_s=2)
    started = time.monotonic()
    with pytest.raises(TransientError):
        publisher.publish("tts-jobs", b"{}", attributes={"backend": "home-4090"})
    assert time.monotonic() - started < 10
