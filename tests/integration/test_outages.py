"""What callers see when a Google dependency is down: a typed transient error, quickly."""

from __future__ import annotations

import threading

import google.cloud.pubsub_v1 as pubsub_v1
import pytest

from infra.processes import free_port
from shared.adapters.pubsub import PubSubPublisher
from shared.domain.errors import BackendUnavailable


def test_publishing_to_a_dead_pubsub_fails_transiently_by_its_own_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    publisher = PubSubPublisher(pubsub_v1.PublisherClient(), project_id="p", timeout_s=2)
    errors: list[Exception] = []

    def publish() -> None:
        try:
            publisher.publish("tts-jobs", b"{}", attributes={"backend": "home-4090"})
        except Exception as exc:  # what the caller would see, checked below
            errors.append(exc)

    caller = threading.Thread(target=publish, daemon=True)
    caller.start()
    # Without a timeout of its own the publish waits on the dead host for many minutes: the
    # bound here only keeps a hang from holding the suite, it is not a duration under test.
    caller.join(timeout=120)
    assert not caller.is_alive(), "the publish never gave up"
    [error] = errors
    assert type(error) is BackendUnavailable
    assert error.retryable
    # It gave up on its own timeout (the future's wait), not on an answer from the host.
    assert error.message == "publish to tts-jobs: TimeoutError"
