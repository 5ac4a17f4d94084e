"""Signed intake v2 over fakes: what a signature covers, freshness, copies, the deprecated v1
scheme, outages, reply topics per key, and the signing secret a key's owner is shown."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import pytest
from flask.testing import FlaskClient
from pydantic import SecretStr

from shared.domain import intake_signing as v2
from shared.domain.errors import ConfigurationError, StorageUnavailable
from shared.domain.keys import ApiKey, Scope, new_api_key, sign_message
from shared.settings import IntakeSettings, Settings
from shared.usecases.gateway import Gateway
from shared.usecases.intake import Intake, IntakeMessage, IntakeOutcome, take
from tests.support.gateway import Fakes, fake_gateway

SERVER_KEY = "the-gateway's-own-intake-key"
BODY = {"text": "From a pipeline.", "speaker": "Ryan", "language": "en"}
WINDOW_S = IntakeSettings().window_s


@pytest.fixture
def settings() -> Settings:
    return Settings(
        bucket="test-bucket",
        reply_topics=("pipeline-a-results", "pipeline-b-results"),
        intake=IntakeSettings(signing_key=SecretStr(SERVER_KEY)),
    )


@dataclass(frozen=True)
class Pipeline:
    record: ApiKey
    api_key: str

    @property
    def secret(self) -> str:
        """What ``GET /v1/intake/secret`` shows this key's owner."""
        return v2.derive_secret(SERVER_KEY, key_id=self.record.key_id)


def pipeline(
    gw: Gateway, owner: str = "pipeline", *, reply_topics: tuple[str, ...] = ()
) -> Pipeline:
    api_key, record = new_api_key(
        owner=owner, scopes=frozenset({Scope.USER}), now=gw.clock(), reply_topics=reply_topics
    )
    gw.keys.put(record)
    return Pipeline(record=record, api_key=api_key)


def signed(
    p: Pipeline,
    body: object = BODY,
    *,
    at: datetime,
    message_id: str = "m-1",
    idempotency_key: str | None = None,
    **correlation: str,
) -> IntakeMessage:
    data = json.dumps(body).encode()
    attributes = v2.signed_attributes(
        p.secret,
        key_id=p.record.key_id,
        body=data,
        now=at,
        idempotency_key=idempotency_key,
        correlation=correlation,
    )
    return IntakeMessage(data=data, attributes=attributes, message_id=message_id, published_at=at)


def jobs_of(fakes: Fakes, owner: str = "pipeline") -> list[str]:
    owned = fakes.jobs.list_owned(
        owner=owner, state=None, created_after=None, start_after=None, limit=100
    )
    return [job.id for job in owned]


def dead_letters(gw: Gateway, fakes: Fakes) -> list[dict[str, str]]:
    topic = gw.settings.intake_dead_letter_topic
    return [m.attributes for m in fakes.publisher.messages if m.topic == topic]


def refused(outcome: IntakeOutcome) -> str:
    assert outcome.kind is Intake.DEAD_LETTERED, outcome
    assert outcome.error is not None
    return outcome.error.code


# -- the string to sign ----------------------------------------------------------------------


def test_the_string_to_sign_is_the_documented_one() -> None:
    def h(text: str | bytes) -> str:
        return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()

    body = b'{"text": "Hi."}'
    got = v2.string_to_sign(
        key_id="kid_0123456789abcdef01234567",
        timestamp="1767225600",
        idempotency_key="book-7-ch-1",
        attributes={"chapter": "1", "book": "7"},
        body=body,
    )
    pairs = sorted([f"{h('chapter')}:{h('1')}", f"{h('book')}:{h('7')}"])
    assert (
        got
        == "\n".join(
            [
                "tts-intake-v2",
                "kid_0123456789abcdef01234567",
                "1767225600",
                h("book-7-ch-1"),
                ",".join(pairs),
                h(body),
            ]
        ).encode()
    )
    secret = v2.derive_secret(SERVER_KEY, key_id="kid_0123456789abcdef01234567")
    assert secret.startswith("tsig_")
    assert len(secret) == 5 + 43
    signature = v2.sign(
        secret,
        key_id="kid_0123456789abcdef01234567",
        timestamp="1767225600",
        body=body,
        idempotency_key="book-7-ch-1",
        attributes={"book": "7", "chapter": "1"},
    )
    assert signature == "v2=" + hmac.new(secret.encode(), got, "sha256").hexdigest()
    # The worked example of contracts/intake-signing.md (checked there with openssl too).
    example = v2.derive_secret("example-server-key", key_id="kid_0123456789abcdef01234567")
    assert example == "tsig_08FiBSFiEDGCig0k8YKVNQS2ek0xoYEljTEUYAhi53g"
    assert (
        v2.sign(
            example,
            key_id="kid_0123456789abcdef01234567",
            timestamp="1767225600",
            body=body,
            idempotency_key="book-7-ch-1",
            attributes={"book": "7", "chapter": "1"},
        )
        == "v2=765247d6dfffb4ff98479f5c7e6e9b74286a754a92cc5bfdc3fdabf93337c8b8"
    )


def test_each_key_has_its_own_secret_and_only_the_server_key_makes_it() -> None:
    one = v2.derive_secret(SERVER_KEY, key_id="kid_" + "1" * 24)
    assert one == v2.derive_secret(SERVER_KEY, key_id="kid_" + "1" * 24)
    assert one != v2.derive_secret(SERVER_KEY, key_id="kid_" + "2" * 24)
    assert one != v2.derive_secret("another-deployment", key_id="kid_" + "1" * 24)


# -- taking messages --------------------------------------------------------------------------


def test_a_v2_message_becomes_a_job_with_its_correlation(gateway: Gateway, fakes: Fakes) -> None:
    p = pipeline(gateway)
    outcome = take(gateway, signed(p, at=gateway.clock(), chapter="7", book="moby"))
    assert outcome.kind is Intake.CREATED
    assert outcome.job is not None
    assert outcome.job.correlation == {"chapter": "7", "book": "moby"}  # not timestamp & co
    assert dead_letters(gateway, fakes) == []


def test_a_replayed_message_makes_one_job_and_a_dead_letter_saying_so(
    gateway: Gateway, fakes: Fakes
) -> None:
    p = pipeline(gateway)
    original = signed(p, at=gateway.clock(), message_id="m-1")
    first = take(gateway, original)
    # Pub/Sub redelivers the same message (same id): the same job, nothing refused.
    again = take(gateway, original)
    assert first.job is not None
    assert again.job is not None
    assert again.job.id == first.job.id
    # Someone who read it republishes it (a new message id), within the window.
    copy = replace(original, message_id="m-2", published_at=gateway.clock() + timedelta(seconds=5))
    assert refused(take(gateway, copy)) == "replayed_message"
    assert jobs_of(fakes) == [first.job.id]
    [letter] = dead_letters(gateway, fakes)
    assert letter["error_code"] == "replayed_message"
    assert letter["error"] == "this signature was already used by message m-1"
    assert "signature" not in letter


def test_without_an_idempotency_key_a_copy_is_still_one_job(gateway: Gateway, fakes: Fakes) -> None:
    """Replayed from the dead-letter topic (replay=True), a copy is let through the seen check;
    its default idempotency key comes from the signature, so it is the original's job."""
    p = pipeline(gateway)
    original = signed(p, at=gateway.clock())
    job = take(gateway, original).job
    copy = replace(original, message_id="dead-letter-copy")
    again = take(gateway, copy, replay=True)
    assert again.job is not None
    assert job is not None
    assert again.job.id == job.id
    assert jobs_of(fakes) == [job.id]


@pytest.mark.parametrize(
    "change",
    [
        "idempotency_key",
        "correlation_changed",
        "correlation_added",
        "correlation_removed",
        "timestamp",
        "body",
        "key_id",
    ],
)
def test_a_message_changed_after_signing_is_refused(
    gateway: Gateway, fakes: Fakes, change: str
) -> None:
    p = pipeline(gateway)
    other = pipeline(gateway, "someone-else")
    message = signed(p, at=gateway.clock(), idempotency_key="book-7-ch-1", chapter="1")
    attributes = dict(message.attributes)
    data = message.data
    if change == "idempotency_key":
        attributes["idempotency_key"] = "book-7-ch-2"
    elif change == "correlation_changed":
        attributes["chapter"] = "2"
    elif change == "correlation_added":
        attributes["reply_to"] = "elsewhere"
    elif change == "correlation_removed":
        del attributes["chapter"]
    elif change == "timestamp":
        attributes["timestamp"] = str(int(attributes["timestamp"]) + 1)
    elif change == "body":
        data = json.dumps({**BODY, "text": "Something else."}).encode()
    else:
        attributes["key_id"] = other.record.key_id
    outcome = take(gateway, replace(message, attributes=attributes, data=data))
    assert refused(outcome) == "unauthenticated"
    assert jobs_of(fakes) == []
    assert jobs_of(fakes, "someone-else") == []


@pytest.mark.parametrize("offset_s", [WINDOW_S + 1, -(WINDOW_S + 1), 3 * 3600])
def test_a_message_published_outside_its_window_is_stale(
    gateway: Gateway, fakes: Fakes, offset_s: int
) -> None:
    p = pipeline(gateway)
    message = signed(p, at=gateway.clock())
    late = replace(message, published_at=gateway.clock() + timedelta(seconds=offset_s))
    assert refused(take(gateway, late)) == "stale_message"
    [letter] = dead_letters(gateway, fakes)
    assert letter["error_code"] == "stale_message"
    assert f"more than {WINDOW_S} s apart" in letter["error"]
    assert jobs_of(fakes) == []


def test_a_redelivery_hours_later_is_judged_by_its_publish_time(
    gateway: Gateway, fakes: Fakes
) -> None:
    """Retries and a backlog never make a message stale: Pub/Sub's publish time stays."""
    p = pipeline(gateway)
    message = signed(p, at=gateway.clock())
    fakes.clock.advance(6 * 3600)
    assert take(gateway, message).kind is Intake.CREATED


@pytest.mark.parametrize("timestamp", ["", "soon", "-5", "1e9", "\uff11\uff12", "9" * 12])
def test_a_v2_message_needs_a_timestamp_of_whole_seconds(
    gateway: Gateway, fakes: Fakes, timestamp: str
) -> None:
    p = pipeline(gateway)
    message = signed(p, at=gateway.clock())
    attributes = {**message.attributes, "timestamp": timestamp}
    assert refused(take(gateway, replace(message, attributes=attributes))) == "unauthenticated"


def test_the_key_store_alone_cannot_sign_v2(
    gateway: Gateway, fakes: Fakes, settings: Settings
) -> None:
    """Whoever copied the key collection has each key's hash and id, not the server key."""
    p = pipeline(gateway)
    stolen = p.record  # the document: key_hash (its id), key_id, owner, scopes
    data = json.dumps(BODY).encode()
    at = gateway.clock()
    for guess in (
        stolen.key_hash,
        v2.derive_secret(stolen.key_hash, key_id=stolen.key_id),
        v2.derive_secret("", key_id=stolen.key_id),
    ):
        attributes = v2.signed_attributes(guess, key_id=stolen.key_id, body=data, now=at)
        message = IntakeMessage(data=data, attributes=attributes, message_id=guess[:8])
        assert refused(take(gateway, message)) == "unauthenticated"
    # The deprecated v1 scheme is keyed by that very hash: refused once it is turned off.
    legacy = {"key_id": stolen.key_id, "signature": sign_message(p.api_key, data)}
    strict = Settings(
        bucket="test-bucket",
        intake=IntakeSettings(signing_key=SecretStr(SERVER_KEY), accept_legacy=False),
    )
    v1 = IntakeMessage(data=data, attributes=legacy, message_id="v1")
    assert refused(take(fake_gateway(strict, fakes), v1)) == "unauthenticated"
    assert jobs_of(fakes) == []


def test_v1_messages_are_taken_for_now_and_logged_as_deprecated(
    gateway: Gateway, fakes: Fakes, caplog: pytest.LogCaptureFixture
) -> None:
    p = pipeline(gateway)
    data = json.dumps(BODY).encode()
    attributes = {
        "key_id": p.record.key_id,
        "signature": sign_message(p.api_key, data),
        "timestamp": "was correlation in v1",
    }
    with caplog.at_level(logging.WARNING):
        outcome = take(gateway, IntakeMessage(data=data, attributes=attributes, message_id="m"))
    assert outcome.job is not None
    assert outcome.job.correlation == {"timestamp": "was correlation in v1"}
    assert [r.getMessage() for r in caplog.records] == [
        "intake message signed the deprecated v1 way (body only): sign v2"
    ]


class Down:
    """A store as Firestore down makes it: the calls named in ``down`` fail transiently."""

    def __init__(self, inner: object, *, down: set[str]) -> None:
        self._inner = inner
        self.down = down

    def __getattr__(self, name: str) -> object:
        if name in self.down:

            def fail(*args: object, **kwargs: object) -> object:
                raise StorageUnavailable(f"{name}: ServiceUnavailable (fake)")

            return fail
        return getattr(self._inner, name)


@pytest.mark.parametrize("failing", ["find_by_id", "note_signature"])
def test_a_store_outage_is_retried_never_dead_lettered(
    settings: Settings, fakes: Fakes, failing: str
) -> None:
    gateway = fake_gateway(settings, fakes)
    p = pipeline(gateway)
    message = signed(p, at=gateway.clock())
    down = Down(fakes.keys, down={failing})
    outage = replace(gateway, keys=down)  # type: ignore[arg-type]
    with pytest.raises(StorageUnavailable):  # the entry point raises: Pub/Sub redelivers
        take(outage, message)
    assert dead_letters(gateway, fakes) == []
    assert jobs_of(fakes) == []
    fakes.clock.advance(600)  # back up ten minutes later: the redelivery is not stale
    assert take(gateway, message).kind is Intake.CREATED


def test_a_job_store_outage_after_the_signature_was_noted_is_retried(
    gateway: Gateway, fakes: Fakes
) -> None:
    """The signature is noted under this message's id before the job is made: the redelivery
    of the same message is no copy of it."""
    p = pipeline(gateway)
    message = signed(p, at=gateway.clock())
    outage = replace(gateway, jobs=Down(fakes.jobs, down={"create"}))  # type: ignore[arg-type]
    with pytest.raises(StorageUnavailable):
        take(outage, message)
    assert fakes.keys.signatures  # noted
    assert dead_letters(gateway, fakes) == []
    outcome = take(gateway, message)
    assert outcome.kind is Intake.CREATED
    assert len(jobs_of(fakes)) == 1


def test_without_the_server_key_v2_messages_are_retried_not_dead_lettered(fakes: Fakes) -> None:
    gateway = fake_gateway(Settings(bucket="test-bucket"), fakes)
    p = pipeline(gateway)
    with pytest.raises(ConfigurationError, match="TTS_INTAKE__SIGNING_KEY"):
        take(gateway, signed(p, at=gateway.clock()))
    assert dead_letters(gateway, fakes) == []


# -- reply topics are the key's ----------------------------------------------------------------


def test_an_owner_cannot_use_another_owners_reply_topic(gateway: Gateway, fakes: Fakes) -> None:
    a = pipeline(gateway, "owner-a", reply_topics=("pipeline-a-results",))
    pipeline(gateway, "owner-b", reply_topics=("pipeline-b-results",))
    at = gateway.clock()
    theirs = signed(a, {**BODY, "reply_topic": "pipeline-b-results"}, at=at, message_id="x")
    assert refused(take(gateway, theirs)) == "invalid_request"
    [letter] = dead_letters(gateway, fakes)
    assert (
        letter["error"] == "reply_topic 'pipeline-b-results' is not one of this key's reply topics"
    )
    ours = signed(a, {**BODY, "reply_topic": "pipeline-a-results"}, at=at, message_id="y")
    outcome = take(gateway, ours)
    assert outcome.job is not None
    assert outcome.job.reply_topic == "pipeline-a-results"


def test_a_key_topic_the_deployment_no_longer_allows_is_refused(
    gateway: Gateway, fakes: Fakes
) -> None:
    a = pipeline(gateway, "owner-a", reply_topics=("dropped-since",))
    message = signed(a, {**BODY, "reply_topic": "dropped-since"}, at=gateway.clock())
    assert refused(take(gateway, message)) == "invalid_request"


def test_over_http_a_reply_topic_is_the_keys_too(gateway: Gateway, client: FlaskClient) -> None:
    a = pipeline(gateway, "owner-a", reply_topics=("pipeline-a-results",))
    auth = {"Authorization": f"Bearer {a.api_key}"}
    other = client.post(
        "/v1/tts/jobs", json={**BODY, "reply_topic": "pipeline-b-results"}, headers=auth
    )
    assert other.status_code == 422
    assert other.get_json()["error"]["allowed"] == ["pipeline-a-results"]
    own = client.post(
        "/v1/tts/jobs", json={**BODY, "reply_topic": "pipeline-a-results"}, headers=auth
    )
    assert own.status_code == 202


# -- the secret a key's owner is shown ---------------------------------------------------------


def test_a_key_sees_its_own_intake_secret(gateway: Gateway, client: FlaskClient) -> None:
    p = pipeline(gateway)
    response = client.get("/v1/intake/secret", headers={"Authorization": f"Bearer {p.api_key}"})
    assert response.status_code == 200
    assert response.get_json() == {"key_id": p.record.key_id, "secret": p.secret}


def test_without_the_server_key_there_is_no_intake_secret(fakes: Fakes) -> None:
    from functions.api.app import create_api

    gateway = fake_gateway(Settings(bucket="test-bucket"), fakes)
    p = pipeline(gateway)
    client = create_api(gateway).test_client()
    response = client.get("/v1/intake/secret", headers={"Authorization": f"Bearer {p.api_key}"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "misconfigured"
