"""Pipelines through the real emulators: a signed intake message becomes a job, and its end
comes back as one result message; an invalid one is dead-lettered with its error and
acknowledged (never redelivered); a redelivery makes one job, and a republished copy is
dead-lettered as replayed; an unproven, changed or stale one makes nothing; what Pub/Sub
dead-lettered after an outage is replayed by ``python -m functions.intake_replay``."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import functions_framework
import pytest
from flask.testing import FlaskClient
from google.cloud import pubsub_v1

from functions import intake_replay
from gpu_worker.runner import JobRunner, Outcome, RunnerConfig
from gpu_worker.tasks import Task
from infra import topology
from shared.domain import intake_signing as v2
from shared.domain.jobs import JobOutput
from shared.domain.keys import Scope, new_api_key, sign_message
from shared.settings import Settings
from shared.usecases.gateway import Gateway
from shared.wire.messages import JobMessage
from tests.support.contracts import validate_schema
from tests.support.waiting import eventually

SOURCE = Path(__file__).resolve().parents[2] / "functions" / "intake.py"
BODY = {"text": "From a pipeline.", "speaker": "Ryan", "language": "en"}
SERVER_KEY = "integration-intake-key"


@pytest.fixture
def intake(cloud_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    monkeypatch.setenv("TTS_BUCKET", cloud_settings.bucket)
    monkeypatch.setenv("TTS_COLLECTION_PREFIX", cloud_settings.collection_prefix)
    monkeypatch.setenv("TTS_INTAKE__SIGNING_KEY", SERVER_KEY)
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
    def __init__(self, settings: Settings, topic: str, *, filter: str = "") -> None:
        self._client = pubsub_v1.SubscriberClient()
        project = settings.project_id
        self.name = f"tap-{uuid.uuid4().hex[:8]}"
        self.path = self._client.subscription_path(project, self.name)
        self._client.create_subscription(
            request={
                "name": self.path,
                "topic": self._client.topic_path(project, topic),
                "filter": filter,
            }
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


def push(
    data: bytes, attributes: dict[str, str], message_id: str, *, published: datetime | None = None
) -> dict[str, object]:
    when = published or datetime.now(UTC)
    return {
        "subscription": "projects/p/subscriptions/tts-intake-push",
        "message": {
            "data": base64.b64encode(data).decode(),
            "messageId": message_id,
            "publishTime": when.isoformat().replace("+00:00", "Z"),
            "attributes": attributes,
        },
    }


def signed(
    key: tuple[str, str],
    body: object,
    *,
    idempotency_key: str | None = None,
    at: datetime | None = None,
    **correlation: str,
) -> tuple[bytes, dict[str, str]]:
    _, key_id = key
    data = json.dumps(body).encode()
    attributes = v2.signed_attributes(
        v2.derive_secret(SERVER_KEY, key_id=key_id),
        key_id=key_id,
        body=data,
        now=at or datetime.now(UTC),
        idempotency_key=idempotency_key,
        correlation=correlation,
    )
    return data, attributes


class Instant:
    def execute(self, task: Task) -> JobOutput:
        return JobOutput()


def test_an_intake_message_becomes_one_job_and_one_result(
    intake: FlaskClient, key: tuple[str, str], cloud_gateway: Gateway, cloud_settings: Settings
) -> None:
    results = Tap(cloud_settings, "tts-results")
    data, attributes = signed(key, BODY, chapter="7", idempotency_key=f"ch7-{uuid.uuid4().hex}")
    first = intake.post("/", json=push(data, attributes, "m-1"))
    again = intake.post("/", json=push(data, attributes, "m-1"))  # Pub/Sub redelivered it
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


def test_a_republished_copy_makes_no_second_job_and_is_dead_lettered_as_replayed(
    intake: FlaskClient, key: tuple[str, str], cloud_gateway: Gateway, cloud_settings: Settings
) -> None:
    dead = Tap(cloud_settings, "tts-intake-dead-letter")
    data, attributes = signed(key, BODY, chapter="1")  # no idempotency key of its own
    assert intake.post("/", json=push(data, attributes, "m-1")).status_code == 200
    # Someone who read the topic (or its dead letters) publishes it again: a new message id.
    assert intake.post("/", json=push(data, attributes, "m-2")).status_code == 200
    [letter] = dead.pull(until=bool)
    assert letter.attributes["error_code"] == "replayed_message"
    assert letter.attributes["error"] == "this signature was already used by message m-1"
    assert letter.attributes["message_id"] == "m-2"
    owned = cloud_gateway.jobs.list_owned(
        owner="pipeline", state=None, created_after=None, start_after=None, limit=10
    )
    assert len(owned) == 1


@pytest.mark.parametrize(
    ("forgery", "code"),
    [
        ("unsigned", "unauthenticated"),
        ("wrong-signature", "unauthenticated"),
        ("unknown-key", "unauthenticated"),
        ("idempotency-key-changed", "unauthenticated"),
        ("correlation-changed", "unauthenticated"),
        ("signed-with-the-key-hash", "unauthenticated"),
        ("stale", "stale_message"),
    ],
)
def test_an_unproven_message_creates_nothing(
    intake: FlaskClient,
    key: tuple[str, str],
    cloud_gateway: Gateway,
    cloud_settings: Settings,
    forgery: str,
    code: str,
) -> None:
    dead = Tap(cloud_settings, "tts-intake-dead-letter")
    published = datetime.now(UTC)
    data, attributes = signed(key, BODY, idempotency_key="book-7", chapter="7")
    if forgery == "unsigned":
        attributes = {}
    elif forgery == "wrong-signature":
        attributes["signature"] = sign_message("tts_not-the-key", data)
    elif forgery == "unknown-key":
        attributes["key_id"] = "kid_" + "0" * 24
    elif forgery == "idempotency-key-changed":
        attributes["idempotency_key"] = "book-8"
    elif forgery == "correlation-changed":
        attributes["chapter"] = "8"
    elif forgery == "signed-with-the-key-hash":
        stored = cloud_gateway.keys.find_by_id(key[1])
        assert stored is not None
        attributes = v2.signed_attributes(
            stored.key_hash, key_id=key[1], body=data, now=published, idempotency_key="book-7"
        )
    else:
        published += timedelta(hours=1)  # a copy published an hour after it was signed
    message_id = f"f-{uuid.uuid4().hex}"
    response = intake.post("/", json=push(data, attributes, message_id, published=published))
    assert response.status_code == 200
    [letter] = dead.pull(until=bool)
    assert letter.attributes["error_code"] == code
    jobs = cloud_gateway.jobs.list_owned(
        owner="pipeline", state=None, created_after=None, start_after=None, limit=10
    )
    assert jobs == []


def test_what_pubsub_dead_lettered_in_an_outage_is_replayed_into_one_job_each(
    intake: FlaskClient,
    key: tuple[str, str],
    cloud_gateway: Gateway,
    cloud_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Pub/Sub forwards a message it could not deliver five times as it was, plus its own
    attributes; the replay subscription's filter keeps only those, and the tool takes each."""
    [declared] = [s for s in topology.load().subscriptions if s.name == intake_replay.SUBSCRIPTION]
    replay = Tap(cloud_settings, declared.topic, filter=declared.filter)
    dead_letters = pubsub_v1.PublisherClient()
    topic = dead_letters.topic_path(cloud_settings.project_id, declared.topic)
    published = datetime.now(UTC) - timedelta(hours=3)  # the outage lasted hours
    forwarded = {
        "CloudPubSubDeadLetterSourceDeliveryCount": "5",
        "CloudPubSubDeadLetterSourceSubscription": "tts-intake-push",
        "CloudPubSubDeadLetterSourceTopicPublishTime": published.isoformat(),
    }
    outage, outage_attributes = signed(key, BODY, at=published, chapter="1")
    # The same message again, as Pub/Sub may dead-letter twice: still one job.
    twice = [(outage, {**outage_attributes, **forwarded})] * 2
    # One that was stale all along, now correctly refused with its reason.
    stale, stale_attributes = signed(key, BODY, at=published - timedelta(hours=1), chapter="2")
    # The intake's own dead letter (it carries error_code): final, never replayed.
    refused = (b"{}", {"error_code": "invalid_request", "error": "text: Field required"})
    for data, attributes in [*twice, (stale, {**stale_attributes, **forwarded}), refused]:
        dead_letters.publish(topic, data, **attributes).result(timeout=30)

    monkeypatch.setenv("TTS_INTAKE__SIGNING_KEY", SERVER_KEY)
    assert intake_replay.main(["--no-env-file", "--subscription", replay.name]) == 0
    # (The emulator applies no subscription filter: the tool itself passes over what carries
    # error_code, here the refused one and, if it came back already, the stale one's letter.)
    assert capsys.readouterr().out.startswith(
        "replayed 3: 2 became jobs, 1 dead-lettered with their reason;"
    )
    [job] = cloud_gateway.jobs.list_owned(
        owner="pipeline", state=None, created_after=None, start_after=None, limit=10
    )
    assert job.correlation == {"chapter": "1"}
    assert intake_replay.main(["--no-env-file", "--subscription", replay.name]) == 0
    assert capsys.readouterr().out.startswith("replayed 0: 0 became jobs, 0 dead-lettered")
