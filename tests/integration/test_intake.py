"""Pipelines through the real emulators: a signed intake message becomes a job, and its end
comes back as one result message; an invalid one is dead-lettered with its error and
acknowledged (never redelivered); a duplicate makes one job; an unproven one makes nothing."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import functions_framework
import pytest
from flask.testing import FlaskClient
from google.cloud import pubsub_v1

from gpu_worker.runner import JobRunner, Outcome, RunnerConfig
from gpu_worker.tasks import Task
from shared.domain.jobs import JobOutput
from shared.domain.keys import Scope, new_api_key, sign_message
from shared.settings import Settings
from shared.usecases.gateway import Gateway
from shared.wire.messages import JobMessage
from tests.support.contracts import validate_schema
from tests.support.waiting import eventually

SOURCE = Path(__file__).resolve().parents[2] / "functions" / "intake.py"
BODY = {"text": "From a pipeline.", "speaker": "Ryan", "language": "en"}


@pytest.fixture
def intake(cloud_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    monkeypatch.setenv("TTS_BUCKET", cloud_settings.bucket)
    monkeypatch.setenv("TTS_COLLECTION_PREFIX", cloud_settings.collection_prefix)
    return functions_framework.create_app(
        target="intake", source=str(SOURCE), signature_type="cloudevent"
    ).test_client()


@pytest.fixture
def key(cloud_gateway: Gateway) -> tuple[str, str]:
    secret, record = new_api_key(
        owner="pipeline", scopes=frozenset({Scope.USER}), now=cloud_gateway.clock()
    )
    cloud_gateway.keys.put(record)
    return secret, record.key_id


class Tap:
    def __init__(self, settings: Settings, topic: str) -> None:
        self._client = pubsub_v1.SubscriberClient()
        project = settings.project_id
        self.path = self._client.subscription_path(project, f"tap-{uuid.uuid4().hex[:8]}")
        self._client.create_subscription(
            name=self.path, topic=self._client.topic_path(project, topic)
        )

    def pull(
        self, until: Callable[[list[pubsub_v1.types.PubsubMessage]], bool]
    ) -> list[pubsub_v1.types.PubsubMessage]:
        """Every message on the tap (each acknowledged), once ``until`` holds of them and a pull
        comes back empty. The code under test publishes before it returns, so what it sent is
        already here: an empty pull means all of it was read, and a duplicate shows."""
        got: list[pubsub_v1.types.PubsubMessage] = []

        def drained() -> bool:
            response = self._client.pull(
                subscription=self.path, max_messages=50, timeout=5, return_immediately=True
            )
            if not response.received_messages:
                return until(got)
            got.extend(r.message for r in response.received_messages)
            self._client.acknowledge(
                subscription=self.path, ack_ids=[r.ack_id for r in response.received_messages]
            )
            return False

        eventually(drained, timeout_s=30, interval_s=0.1, message=lambda: f"only {got}")
        return got


def push(data: bytes, attributes: dict[str, str], message_id: str) -> dict[str, object]:
    return {
        "subscription": "projects/p/subscriptions/tts-intake-push",
        "message": {
            "data": base64.b64encode(data).decode(),
            "messageId": message_id,
            "attributes": attributes,
        },
    }


def signed(key: tuple[str, str], body: object, **extra: str) -> tuple[bytes, dict[str, str]]:
    secret, key_id = key
    data = json.dumps(body).encode()
    return data, {"key_id": key_id, "signature": sign_message(secret, data), **extra}


class Instant:
    def execute(self, task: Task) -> JobOutput:
        return JobOutput()


def test_an_intake_message_becomes_one_job_and_one_result(
    intake: FlaskClient, key: tuple[str, str], cloud_gateway: Gateway, cloud_settings: Settings
) -> None:
    results = Tap(cloud_settings, "tts-results")
    data, attributes = signed(key, BODY, chapter="7", idempotency_key=f"ch7-{uuid.uuid4().hex}")
    first = intake.post("/", json=push(data, attributes, "m-1"))
    again = intake.post("/", json=push(data, attributes, "m-2"))  # the publisher retried
    assert (first.status_code, again.status_code) == (200, 200)
    owned = cloud_gateway.jobs.list_owned(
        owner="pipeline", state=None, created_after=None, start_after=None, limit=10
    )
    [job] = owned
    assert job.correlation == {"chapter": "7"}

    runner = JobRunner(
        gateway=cloud_gateway,
        executor=Instant(),
        config=RunnerConfig(worker_id="w", backend_id=job.backend, lease_s=60),
    )
    assert runner.run(JobMessage(job_id=job.id)).outcome is Outcome.SUCCEEDED
    runner.run(JobMessage(job_id=job.id))  # a redelivered job message

    def of_job(
        messages: list[pubsub_v1.types.PubsubMessage],
    ) -> list[pubsub_v1.types.PubsubMessage]:
        return [m for m in messages if m.attributes["job_id"] == job.id]

    ours = of_job(results.pull(until=lambda got: bool(of_job(got))))
    assert len(ours) == 1
    body = json.loads(ours[0].data)
    validate_schema("job-result.schema.json", body)
    assert (body["state"], body["correlation"]) == ("succeeded", {"chapter": "7"})
    assert ours[0].attributes["chapter"] == "7"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"text": "x", "speaker": "Nobody"}, "invalid_request"),
        ({"text": "x", "speaker": "Ryan", "colour": "blue"}, "invalid_request"),
        ("not an object", "invalid_request"),
    ],
)
def test_an_invalid_message_is_dead_lettered_with_its_error_and_acknowledged(
    intake: FlaskClient,
    key: tuple[str, str],
    cloud_gateway: Gateway,
    cloud_settings: Settings,
    body: object,
    code: str,
) -> None:
    dead = Tap(cloud_settings, "tts-intake-dead-letter")
    data, attributes = signed(key, body)
    response = intake.post("/", json=push(data, attributes, f"bad-{uuid.uuid4().hex}"))
    assert response.status_code == 200  # acknowledged: Pub/Sub will not deliver it again
    [letter] = dead.pull(until=bool)
    assert letter.data == data
    assert letter.attributes["error_code"] == code
    assert letter.attributes["error"]
    assert "signature" not in letter.attributes
    assert (
        cloud_gateway.jobs.list_owned(
            owner="pipeline", state=None, created_after=None, start_after=None, limit=10
        )
        == []
    )


@pytest.mark.parametrize("forgery", ["unsigned", "wrong-signature", "unknown-key"])
def test_an_unproven_message_creates_nothing(
    intake: FlaskClient,
    key: tuple[str, str],
    cloud_gateway: Gateway,
    cloud_settings: Settings,
    forgery: str,
) -> None:
    dead = Tap(cloud_settings, "tts-intake-dead-letter")
    data, attributes = signed(key, BODY)
    if forgery == "unsigned":
        attributes = {}
    elif forgery == "wrong-signature":
        attributes["signature"] = sign_message("tts_not-the-key", data)
    else:
        attributes["key_id"] = "kid_" + "0" * 24
    assert intake.post("/", json=push(data, attributes, f"f-{uuid.uuid4().hex}")).status_code == 200
    [letter] = dead.pull(until=bool)
    assert letter.attributes["error_code"] == "unauthenticated"
    jobs = cloud_gateway.jobs.list_owned(
        owner="pipeline", state=None, created_after=None, start_after=None, limit=10
    )
    assert jobs == []
