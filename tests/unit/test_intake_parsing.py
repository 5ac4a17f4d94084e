"""The intake's reading of a message, over fakes: whatever a publisher puts on the topic ends
as a job or as one dead letter with its reason, never as an exception (which Pub/Sub would
redeliver five times before its own dead-lettering, reasonless)."""

from __future__ import annotations

import json

import pytest

from shared.domain.keys import Scope, new_api_key, sign_message
from shared.usecases.gateway import Gateway
from shared.usecases.intake import Intake, IntakeMessage, take
from tests.support.gateway import Fakes

BODY = {"text": "From a pipeline.", "speaker": "Ryan", "language": "en"}


@pytest.fixture
def key(gateway: Gateway) -> tuple[str, str]:
    secret, record = new_api_key(
        owner="pipeline", scopes=frozenset({Scope.USER}), now=gateway.clock()
    )
    gateway.keys.put(record)
    return secret, record.key_id


def message(key: tuple[str, str], data: bytes, **attributes: str) -> IntakeMessage:
    secret, key_id = key
    signed = {"key_id": key_id, "signature": sign_message(secret, data)}
    return IntakeMessage(data=data, attributes={**signed, **attributes}, message_id="m-1")


def dead_letters(gateway: Gateway, fakes: Fakes) -> list[dict[str, str]]:
    topic = gateway.settings.intake_dead_letter_topic
    return [m.attributes for m in fakes.publisher.messages if m.topic == topic]


def test_a_signed_message_becomes_a_job(
    gateway: Gateway, fakes: Fakes, key: tuple[str, str]
) -> None:
    outcome = take(gateway, message(key, json.dumps(BODY).encode(), chapter="7"))
    assert outcome.kind is Intake.CREATED
    assert outcome.job is not None
    assert outcome.job.correlation == {"chapter": "7"}


def test_a_deeply_nested_body_is_dead_lettered_with_its_reason(
    gateway: Gateway, fakes: Fakes, key: tuple[str, str]
) -> None:
    deep = b"[" * 50_000 + b"]" * 50_000
    outcome = take(gateway, message(key, deep))
    assert outcome.kind is Intake.DEAD_LETTERED
    [letter] = dead_letters(gateway, fakes)
    assert letter["error_code"] == "invalid_request"
    assert letter["error"] == "the message body nests deeper than 64 levels"
    assert (
        fakes.jobs.list_owned(
            owner="pipeline", state=None, created_after=None, start_after=None, limit=10
        )
        == []
    )


@pytest.mark.parametrize("correlation", [None, ["a"], "chapter=7", 7])
def test_a_correlation_that_is_not_an_object_is_dead_lettered(
    gateway: Gateway, fakes: Fakes, key: tuple[str, str], correlation: object
) -> None:
    data = json.dumps({**BODY, "correlation": correlation}).encode()
    outcome = take(gateway, message(key, data, chapter="7"))
    assert outcome.kind is Intake.DEAD_LETTERED
    assert outcome.error is not None
    assert outcome.error.field == "correlation"
    [letter] = dead_letters(gateway, fakes)
    assert letter["error_code"] == "invalid_request"
    assert letter["error"] == "correlation: must be an object of string values"


@pytest.mark.parametrize("signature", ["é" * 64, "\u2603", "0" * 63 + "\u0660"])
def test_a_non_ascii_signature_is_unproven_not_a_crash(
    gateway: Gateway, fakes: Fakes, key: tuple[str, str], signature: str
) -> None:
    outcome = take(gateway, message(key, json.dumps(BODY).encode(), signature=signature))
    assert outcome.kind is Intake.DEAD_LETTERED
    [letter] = dead_letters(gateway, fakes)
    assert letter["error_code"] == "unauthenticated"
    assert "signature" not in letter
