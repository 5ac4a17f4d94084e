"""The RunPod entry points through functions-framework's own client: poison messages are
refused (so Pub/Sub dead-letters them), and a webhook without a valid token changes nothing."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import functions_framework
import pytest
from flask.testing import FlaskClient

from shared.domain.errors import BackendUnavailable
from shared.settings import Settings

SOURCE = Path(__file__).resolve().parents[2] / "functions" / "runpod.py"


@pytest.fixture
def env(cloud_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_BUCKET", cloud_settings.bucket)
    monkeypatch.setenv("TTS_COLLECTION_PREFIX", cloud_settings.collection_prefix)
    monkeypatch.setenv("TTS_RUNPOD__ENDPOINT_ID", "ep")
    monkeypatch.setenv("TTS_RUNPOD__API_KEY", "key")
    monkeypatch.setenv("TTS_RUNPOD__BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("TTS_RUNPOD__WEBHOOK_SECRET", "secret")


def app(target: str, signature: str = "http") -> FlaskClient:
    return functions_framework.create_app(
        target=target, source=str(SOURCE), signature_type=signature
    ).test_client()


def push(data: bytes) -> dict[str, object]:
    """A raw Pub/Sub push body, as the subscription delivers it."""
    return {
        "subscription": "projects/p/subscriptions/tts-jobs-runpod",
        "message": {"data": base64.b64encode(data).decode(), "messageId": "1", "attributes": {}},
    }


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("data", [b"not json", b'{"job_id": ""}', b'{"unexpected": 1}'])
def test_a_poison_message_is_refused_for_the_dead_letter_topic(
    data: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dispatched: list[object] = []

    def dispatch(*args: object) -> None:
        dispatched.append(args)
        raise BackendUnavailable("as a closed RunPod port would")  # a 500 just the same

    # Patched where the entry point imports it from: create_app loads the source afresh.
    monkeypatch.setattr("shared.usecases.dispatch.dispatch", dispatch)
    with caplog.at_level(logging.ERROR):
        response = app("runpod_dispatch", "cloudevent").post("/", json=push(data))
    assert response.status_code == 500  # Pub/Sub redelivers, then dead-letters
    # Refused as undecodable, not failed somewhere past the decoding (where a 500 looks the same).
    assert dispatched == []
    assert "undecodable job message" in [r.getMessage() for r in caplog.records]


@pytest.mark.usefixtures("env")
def test_a_message_for_an_unknown_job_is_acknowledged() -> None:
    response = app("runpod_dispatch", "cloudevent").post(
        "/", json=push(json.dumps({"job_id": "nosuchjob"}).encode())
    )
    assert response.status_code == 200


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("query", ["", "?job=abc", "?job=abc&token=" + "0" * 64])
def test_a_webhook_without_a_valid_token_is_401(query: str) -> None:
    response = app("runpod_webhook").post(f"/{query}", json={"id": "x", "status": "COMPLETED"})
    assert response.status_code == 401
