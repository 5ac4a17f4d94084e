"""Pipelines in: a Pub/Sub message on the intake topic becomes a job, as an HTTP call would.

How a message proves whose it is: Pub/Sub tells a subscriber nothing about who published, so
the message signs itself (v2, contracts/intake-signing.md). Attribute ``key_id`` names one of
the owner's API keys, ``timestamp`` is when it was signed, and ``signature`` is ``v2=`` and an
HMAC-SHA256, keyed by that key's intake signing secret (``GET /v1/intake/secret``, derived
from the gateway's own ``TTS_INTAKE__SIGNING_KEY``), over the body, the idempotency key, the
correlation attributes and the timestamp. An unproven message creates nothing; nor does one
published further than ``TTS_INTAKE__WINDOW_S`` from its timestamp (Pub/Sub's publish time is
the reference: a redelivery keeps it, a republished copy does not), nor a second message with
a signature already seen (each is remembered, with its first message id, past the window).
The deprecated v1 signature (HMAC of the body keyed by the key's SHA-256, which the key store
holds) is still accepted and logged while ``TTS_INTAKE__ACCEPT_LEGACY`` is on.

The body is the JSON the HTTP API takes for ``POST /v1/tts/jobs`` (any speech mode, plus the
delivery options ``deadline_s``, ``correlation``, ``reply_topic``, the last one among the
key's own reply topics). Attributes other than the reserved ones travel as correlation
attributes to the job's result message.

A message that can never succeed (unproven, stale, a copy, malformed, invalid, a voice that
does not exist) is published to the intake's dead-letter topic with the error attached as
attributes, logged, and acknowledged: it is never retried. A transient failure (Firestore or
Pub/Sub down), or a deployment without its signing key, raises, so Pub/Sub redelivers it; after
its subscription's five deliveries Pub/Sub forwards it to the same dead-letter topic without an
``error_code``, and ``python -m functions.intake_replay`` takes those again (``replay=True``).
Idempotent on the ``idempotency_key`` attribute, else on the signature (v1: the message id).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import TypeAdapter, ValidationError

from shared.domain import intake_signing as v2
from shared.domain.errors import (
    ConfigurationError,
    InvalidRequest,
    PayloadTooLarge,
    PermanentError,
    ReplayedMessage,
    StaleMessage,
    Unauthenticated,
)
from shared.domain.jobs import Job
from shared.domain.keys import KEY_ID_PATTERN, ApiKey, Principal, principal_of
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from shared.wire import json_text
from shared.wire.bodies import OPTION_FIELDS, JobOptions, SpeechBody

log = logging.getLogger(__name__)

KEY_ID = v2.KEY_ID
SIGNATURE = v2.SIGNATURE
IDEMPOTENCY_KEY = v2.IDEMPOTENCY_KEY
RESERVED = v2.LEGACY
ERROR_CODE = "error_code"
ERROR = "error"
MAX_ERROR_CHARS = 1000
MAX_ERROR_BYTES = 1000
"""Pub/Sub takes attribute values up to 1024 bytes; an error quoting the message's own text
(a field name, say) may be longer in UTF-8 than in characters."""
MAX_ATTRIBUTES = 100
"""Pub/Sub's limit per message: a dead letter adds three to what the message had."""

_SPEECH: TypeAdapter[SpeechBody] = TypeAdapter(SpeechBody)
_OPTIONS = TypeAdapter(JobOptions)


class Intake(StrEnum):
    CREATED = "created"
    """A job exists for this message (new, or found again for a redelivery)."""
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True, kw_only=True)
class IntakeMessage:
    data: bytes
    attributes: Mapping[str, str]
    message_id: str
    published_at: datetime | None = None
    """When Pub/Sub took it from its publisher (the push's ``publishTime``; for a replayed dead
    letter, the original's). None: now."""


@dataclass(frozen=True, kw_only=True)
class IntakeOutcome:
    kind: Intake
    job: Job | None = None
    error: PermanentError | None = None


@dataclass(frozen=True, kw_only=True)
class _Proof:
    principal: Principal
    correlation: dict[str, str]
    """The message's attributes that travel to its result: all but the scheme's own."""
    default_key: str
    """The job's idempotency key when the message names none."""


def take(gw: Gateway, message: IntakeMessage, *, replay: bool = False) -> IntakeOutcome:
    """One message into one job, or into one dead letter with its reason. ``replay``: the
    message comes back from the dead-letter topic (Pub/Sub forwarded it after failed
    deliveries), so its signature may have been noted under the original's message id; it is
    still verified and checked against its original publish time, and its idempotency key
    makes it the same job as any copy that got through."""
    try:
        proof = _prove(gw, message, replay=replay)
        body, options = _parse(gw, replace(message, attributes=proof.correlation))
        key = message.attributes.get(IDEMPOTENCY_KEY) or proof.default_key
        job = submit_job(
            gw, principal=proof.principal, request=body, idempotency_key=key, options=options
        )
    except ConfigurationError:
        # The deployment's fault, not the message's: retried until it is fixed (and, past
        # Pub/Sub's deliveries, replayable), never dead-lettered as if invalid.
        log.error("intake message not taken: the deployment is misconfigured", exc_info=True)
        raise
    except PermanentError as exc:
        _dead_letter(gw, message, exc)
        return IntakeOutcome(kind=Intake.DEAD_LETTERED, error=exc)
    log.info("intake message became a job", extra={"job_id": job.id, "owner": job.owner})
    return IntakeOutcome(kind=Intake.CREATED, job=job)


def signing_secret(gw: Gateway, principal: Principal) -> str:
    """The intake signing secret of the key ``principal`` authenticated with."""
    if principal.key_id is None:
        raise Unauthenticated("only a caller with an API key has an intake signing secret")
    return v2.derive_secret(_server_key(gw), key_id=principal.key_id)


def _server_key(gw: Gateway) -> str:
    key = gw.settings.intake.signing_key.get_secret_value()
    if not key:
        raise ConfigurationError("signed intake is not configured (TTS_INTAKE__SIGNING_KEY)")
    return key


def _prove(gw: Gateway, message: IntakeMessage, *, replay: bool) -> _Proof:
    key_id = message.attributes.get(KEY_ID)
    signature = message.attributes.get(SIGNATURE)
    if not key_id or not signature:
        raise Unauthenticated("the message carries no key_id and signature attributes")
    # Checked before the lookup: an arbitrary string is no query for Firestore to choke on.
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise Unauthenticated("key_id is not a key id (kid_ and 24 hex digits)")
    key = gw.keys.find_by_id(key_id)
    if key is None or key.disabled:
        raise Unauthenticated(f"no active key {key_id}")
    if signature.startswith(v2.SIGNATURE_PREFIX):
        return _prove_v2(gw, message, key=key, signature=signature, replay=replay)
    return _prove_legacy(gw, message, key=key, signature=signature)


def _prove_v2(
    gw: Gateway, message: IntakeMessage, *, key: ApiKey, signature: str, replay: bool
) -> _Proof:
    attributes = message.attributes
    timestamp = attributes.get(v2.TIMESTAMP, "")
    if not v2.TIMESTAMP_PATTERN.fullmatch(timestamp):
        raise Unauthenticated("a v2 message needs a timestamp attribute: whole Unix seconds")
    correlation = v2.correlation_attributes(attributes, reserved=v2.SIGNED)
    expected = v2.sign(
        v2.derive_secret(_server_key(gw), key_id=key.key_id),
        key_id=key.key_id,
        timestamp=timestamp,
        body=message.data,
        idempotency_key=attributes.get(IDEMPOTENCY_KEY, ""),
        attributes=correlation,
    )
    if not v2.matches(expected, signature):
        raise Unauthenticated(
            "the signature does not match the message (v2 signs the body, idempotency_key, "
            "the correlation attributes and the timestamp)"
        )
    window = timedelta(seconds=gw.settings.intake.window_s)
    signed_at = datetime.fromtimestamp(int(timestamp), UTC)
    published_at = message.published_at or gw.clock()
    if abs(published_at - signed_at) > window:
        raise StaleMessage(
            f"signed at {signed_at.isoformat()} but published at {published_at.isoformat()}: "
            f"more than {window.total_seconds():g} s apart"
        )
    digest = hashlib.sha256(v2.utf8(signature)).hexdigest()
    # Remembered past the last moment a copy could still pass as fresh (signed_at + window).
    first = gw.keys.note_signature(
        digest, message_id=message.message_id, expires_at=signed_at + 2 * window
    )
    if first != message.message_id and not replay:
        raise ReplayedMessage(f"this signature was already used by message {first}")
    return _Proof(
        principal=principal_of(key), correlation=correlation, default_key=f"intake-{digest[:32]}"
    )


def _prove_legacy(gw: Gateway, message: IntakeMessage, *, key: ApiKey, signature: str) -> _Proof:
    if not gw.settings.intake.accept_legacy:
        raise Unauthenticated(
            "v1 signatures (the body alone) are no longer accepted (TTS_INTAKE__ACCEPT_LEGACY): "
            "sign v2"
        )
    expected = hmac.new(key.key_hash.encode(), message.data, "sha256").hexdigest()
    if not v2.matches(expected, signature):
        raise Unauthenticated("the signature does not match the body")
    log.warning(
        "intake message signed the deprecated v1 way (body only): sign v2",
        extra={"key_id": key.key_id, "owner": key.owner, "message_id": message.message_id},
    )
    return _Proof(
        principal=principal_of(key),
        correlation=v2.correlation_attributes(message.attributes, reserved=v2.LEGACY),
        default_key=f"pubsub-{message.message_id}",
    )


def _parse(gw: Gateway, message: IntakeMessage) -> tuple[SpeechBody, JobOptions]:
    limit = gw.settings.api.max_body_bytes
    if len(message.data) > limit:
        raise PayloadTooLarge(f"the message body exceeds {limit} bytes")
    try:
        payload = json_text.loads(message.data)
    except json_text.TooDeep as exc:
        raise InvalidRequest(
            f"the message body nests deeper than {json_text.MAX_DEPTH} levels"
        ) from exc
    except ValueError as exc:  # not UTF-8/16/32, or not JSON
        raise InvalidRequest("the message body is not JSON") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("the message body must be a JSON object")
    options = {k: payload.pop(k) for k in OPTION_FIELDS & payload.keys()}
    extra = {k: v for k, v in message.attributes.items() if k not in RESERVED}
    correlation = options.get("correlation", {})
    if not isinstance(correlation, dict):
        # Merged with the attributes below, so checked here (null, a list, a string).
        raise InvalidRequest("correlation: must be an object of string values", field="correlation")
    options["correlation"] = {**extra, **correlation}
    try:
        body = _SPEECH.validate_json(json.dumps(payload), strict=True)
        return body, _OPTIONS.validate_json(json.dumps(options), strict=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{field}: {first['msg']}", field=field) from exc


def _dead_letter(gw: Gateway, message: IntakeMessage, error: PermanentError) -> None:
    """Keep the message, with why it was refused, where an operator can read it; the signature
    stays off it (it is of no use to a reader and no business of the dead-letter topic)."""
    kept = [(k, v) for k, v in message.attributes.items() if k != SIGNATURE]
    attributes = dict(kept[: MAX_ATTRIBUTES - 3])
    attributes[ERROR_CODE] = error.code
    attributes[ERROR] = _clip(error.message[:MAX_ERROR_CHARS], MAX_ERROR_BYTES)
    attributes["message_id"] = message.message_id
    # A failure here raises: the message is redelivered rather than lost.
    gw.publisher.publish(gw.settings.intake_dead_letter_topic, message.data, attributes=attributes)
    log.warning(
        "intake message dead-lettered",
        extra={"message_id": message.message_id, "code": error.code, "error": error.message},
    )


def _clip(text: str, max_bytes: int) -> str:
    return v2.utf8(text)[:max_bytes].decode("utf-8", "ignore")
