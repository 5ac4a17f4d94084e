"""A fuzz of the intake entry point over fakes: pushes whose bodies, attributes, encodings,
signatures, timestamps and publish times Hypothesis chooses, a few to a topic (message ids
repeat, so redeliveries and copies happen). Every one must become exactly one job or exactly
one dead letter with its reason, and none may raise (Pub/Sub would redeliver it five times and
then dead-letter it without a reason). Bounded (a fixed seed, ``EXAMPLES`` topics); it prints
how many messages ended which way."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from cloudevents.http import CloudEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

import functions.intake as entry
from shared.domain import intake_signing as v2
from shared.domain.keys import Scope, hash_key, new_api_key, sign_message
from shared.settings import IntakeSettings, Settings
from shared.usecases import intake
from shared.usecases.gateway import Gateway
from tests.support.gateway import fake_gateway, make_fakes

EXAMPLES = 150
SERVER_KEY = "fuzz-server-key"
WINDOW_S = 300
NOW = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
TALLY: Counter[str] = Counter()

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
SPEECH = st.fixed_dictionaries(
    {
        "text": st.text(min_size=1, max_size=40),
        "speaker": st.sampled_from(["Ryan", "vivian", "Nobody"]),
    },
    optional={
        "language": st.sampled_from(["en", "english", "klingon"]),
        "reply_topic": st.sampled_from(["owned-by-a", "owned-by-b", "nobody's"]),
        "correlation": JSON,
        "deadline_s": JSON,
        "mode": st.sampled_from(["custom_voice", "voice_design", "bogus"]),
        "seed": JSON,
    },
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["speech", "speech", "speech", "json", "bytes", "deep"]))
    if kind == "speech":
        text = json.dumps(draw(SPEECH), ensure_ascii=draw(st.booleans()))
        encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-32"]))
        return text.encode(encoding, "surrogatepass")
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    depth = draw(st.integers(min_value=1, max_value=5000))
    return b"[" * depth + b"]" * depth


ATTRIBUTE_NAMES = st.sampled_from(
    ["chapter", "book", "timestamp", "key_id", "idempotency_key", "CloudPubSubX", "goog-x"]
) | st.text(min_size=1, max_size=12)


@st.composite
def pushes(draw: st.DrawFn, keys: dict[str, tuple[str, str]]) -> dict[str, object]:
    """One push from the intake's subscription, as Pub/Sub would send it (valid base64, string
    attributes), its content anything."""
    data = draw(bodies())
    correlation = draw(
        st.dictionaries(
            ATTRIBUTE_NAMES.filter(lambda n: n not in v2.SIGNED and not v2.pubsub_owned(n)),
            st.text(max_size=20),
            max_size=3,
        )
    )
    who = draw(st.sampled_from(sorted(keys)))
    api_key, key_id = keys[who]
    idempotency_key = draw(st.none() | st.text(min_size=1, max_size=20))
    signed_at = NOW + timedelta(seconds=draw(st.sampled_from([0, 30, -30, 4 * WINDOW_S])))
    scheme = draw(st.sampled_from(["v2", "v2", "v2", "v1", "v2-tampered", "v2-hash", "junk"]))
    if scheme.startswith("v2"):
        secret = v2.derive_secret(SERVER_KEY, key_id=key_id)
        if scheme == "v2-hash":  # whoever has the key store: the hash, not the server key
            secret = hash_key(api_key)
        attributes = v2.signed_attributes(
            secret,
            key_id=key_id,
            body=data,
            now=signed_at,
            idempotency_key=idempotency_key,
            correlation=correlation,
        )
        if scheme == "v2-tampered":
            attributes[draw(ATTRIBUTE_NAMES)] = draw(st.text(max_size=10))
    elif scheme == "v1":
        attributes = {**correlation, "key_id": key_id, "signature": sign_message(api_key, data)}
    else:
        attributes = draw(st.dictionaries(ATTRIBUTE_NAMES, st.text(max_size=30), max_size=6))
    message: dict[str, object] = {
        "data": base64.b64encode(data).decode(),
        "messageId": draw(st.sampled_from(["m-1", "m-2", "m-3"])),
        "attributes": attributes,
    }
    publish = draw(st.sampled_from(["now", "now", "late", "absent", "garbage"]))
    if publish == "now":
        message["publishTime"] = NOW.isoformat().replace("+00:00", ".123456789Z")
    elif publish == "late":
        message["publishTime"] = (NOW + timedelta(hours=2)).isoformat()
    elif publish == "garbage":
        message["publishTime"] = draw(st.text(max_size=20))
    return {"subscription": "projects/p/subscriptions/tts-intake-push", "message": message}


def gateway_with_keys() -> tuple[Gateway, dict[str, tuple[str, str]]]:
    fakes = make_fakes()
    fakes.clock.now = NOW
    settings = Settings(
        bucket="test-bucket",
        reply_topics=("owned-by-a", "owned-by-b"),
        intake=IntakeSettings(signing_key=SecretStr(SERVER_KEY), window_s=WINDOW_S),
    )
    gw = fake_gateway(settings, fakes)
    keys = {}
    for owner, topics, disabled in (
        ("a", ("owned-by-a",), False),
        ("b", ("owned-by-b",), False),
        ("revoked", (), True),
    ):
        api_key, record = new_api_key(
            owner=owner, scopes=frozenset({Scope.USER}), now=NOW, reply_topics=topics
        )
        gw.keys.put(record.model_copy(update={"disabled": disabled}))
        keys[owner] = (api_key, record.key_id)
    keys["unknown"] = ("tts_unknown", "kid_" + "0" * 24)
    return gw, keys


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    TALLY.clear()
    yield
    print(f"\nintake fuzz: {sum(TALLY.values())} messages: {dict(sorted(TALLY.items()))}")


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), count=st.integers(min_value=1, max_value=4))
def test_every_message_becomes_one_job_or_one_dead_letter_with_its_reason(
    data: st.DataObject, count: int
) -> None:
    gw, keys = gateway_with_keys()
    outcomes: list[intake.IntakeOutcome] = []

    def recorded(gw: Gateway, message: intake.IntakeMessage) -> intake.IntakeOutcome:
        outcome = intake.take(gw, message)
        outcomes.append(outcome)
        return outcome

    topic = gw.settings.intake_dead_letter_topic
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(entry, "_gateway", lambda: gw)
        patch.setattr(entry, "take", recorded)
        sent: list[dict[str, object]] = []
        for n in range(count):
            if sent and data.draw(st.booleans(), label=f"again {n}"):
                # The same message again: a redelivery (same id) or a copy (another id).
                earlier = data.draw(st.sampled_from(sent))
                message = dict(earlier["message"])  # type: ignore[call-overload]
                message["messageId"] = data.draw(st.sampled_from(["m-1", "m-2", "m-3", "m-4"]))
                push = {**earlier, "message": message}
            else:
                push = data.draw(pushes(keys), label=f"push {n}")
            sent.append(push)
            jobs_before = _jobs(gw)
            letters_before = _letters(gw, topic)
            entry.intake(CloudEvent({"type": "t", "source": "s", "id": f"e{n}"}, push))
            outcome = outcomes[-1]
            letters = _letters(gw, topic)
            if outcome.kind is intake.Intake.CREATED:
                assert outcome.job is not None
                assert gw.jobs.get(outcome.job.id) is not None
                assert letters == letters_before
                assert len(_jobs(gw)) - len(jobs_before) in (0, 1)
                TALLY["job"] += 1
            else:
                assert outcome.error is not None
                assert _jobs(gw) == jobs_before
                assert len(letters) == len(letters_before) + 1
                letter = letters[-1]
                assert letter["error_code"] == outcome.error.code
                assert letter["error"]
                assert len(letter["error"].encode("utf-8", "surrogatepass")) <= 1024
                assert len(letter) <= 100
                assert "signature" not in letter
                TALLY[outcome.error.code] += 1


def test_the_fuzz_reached_every_ending() -> None:
    """Runs after the fuzz (same module, file order): each way a message can end was met."""
    endings = {"job", "unauthenticated", "stale_message", "replayed_message", "invalid_request"}
    assert endings <= set(TALLY), TALLY


def _jobs(gw: Gateway) -> set[str]:
    found: set[str] = set()
    for owner in ("a", "b", "revoked"):
        page = gw.jobs.list_owned(
            owner=owner, state=None, created_after=None, start_after=None, limit=1000
        )
        found |= {job.id for job in page}
    return found


def _letters(gw: Gateway, topic: str) -> list[dict[str, str]]:
    return [m.attributes for m in gw.publisher.messages if m.topic == topic]  # type: ignore[attr-defined]
