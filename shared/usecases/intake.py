"""Pipelines in: a Pub/Sub message on the intake topic becomes a job, as an HTTP call would.

How a message proves whose it is: Pub/Sub tells a subscriber nothing about who published, so
the message signs itself. Attribute ``key_id`` names one of the owner's API keys (the public id
``python -m functions.keys create`` prints), and ``signature`` is HMAC-SHA256 of the message
body keyed by the SHA-256 of that key, which the gateway stores and readers of the topic never
see. An unproven message creates nothing.

The body is the JSON the HTTP API takes for ``POST /v1/tts/jobs`` (any speech mode, plus the
delivery options ``deadline_s``, ``correlation``, ``reply_topic``). Attributes other than the
reserved ones below travel as correlation attributes to the job's result message.

A message that can never succeed (unproven, malformed, invalid, a voice that does not exist)
is published to the intake's dead-letter topic with the error attached as attributes, logged,
and acknowledged: it is never retried. A transient failure (Firestore or Pub/Sub down) raises,
so Pub/Sub redelivers it, and its subscription's own dead-letter policy bounds the retries.
Idempotent on the ``idempotency_key`` attribute, else on the Pub/Sub message id.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from pydantic import TypeAdapter, ValidationError

from shared.domain.errors import (
    InvalidRequest,
    PayloadTooLarge,
    PermanentError,
    Unauthenticated,
)
from shared.domain.jobs import Job
from shared.domain.keys import Principal
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from shared.wire import json_text
from shared.wire.bodies import OPTION_FIELDS, JobOptions, SpeechBody

log = logging.getLogger(__name__)

KEY_ID = "key_id"
SIGNATURE = "signature"
IDEMPOTENCY_KEY = "idempotency_key"
RESERVED = frozenset({KEY_ID, SIGNATURE, IDEMPOTENCY_KEY})
ERROR_CODE = "error_code"
ERROR = "error"
MAX_ERROR_CHARS = 1000

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


@dataclass(frozen=True, kw_only=True)
class IntakeOutcome:
    kind: Intake
    job: Job | None = None
    error: PermanentError | None = None


def take(gw: Gateway, message: IntakeMessage) -> IntakeOutcome:
    try:
        principal = _prove(gw, message)
        body, options = _parse(gw, message)
        key = message.attributes.get(IDEMPOTENCY_KEY) or f"pubsub-{message.message_id}"
        job = submit_job(
            gw, principal=principal, request=body, idempotency_key=key, options=options
        )
    except PermanentError as exc:
        _dead_letter(gw, message, exc)
        return IntakeOutcome(kind=Intake.DEAD_LETTERED, error=exc)
    log.info("intake message became a job", extra={"job_id": job.id, "owner": job.owner})
    return IntakeOutcome(kind=Intake.CREATED, job=job)


def _prove(gw: Gateway, message: IntakeMessage) -> Principal:
    key_id = message.attributes.get(KEY_ID)
    signature = message.attributes.get(SIGNATURE)
    if not key_id or not signature:
        raise Unauthenticated("the message carries no key_id and signature attributes")
    key = gw.keys.find_by_id(key_id)
    if key is None or key.disabled:
        raise Unauthenticated(f"no active key {key_id!r}")
    expected = hmac.new(key.key_hash.encode(), message.data, "sha256").hexdigest()
    # compare_digest raises TypeError on a non-ASCII str; such a signature is simply wrong.
    if not signature.isascii() or not hmac.compare_digest(expected, signature):
        raise Unauthenticated("the signature does not match the body")
    return Principal(owner=key.owner, scopes=key.scopes)


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
        raise InvalidRequest(
            "correlation: must be an object of string values", field="correlation"
        )
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
    attributes = {k: v for k, v in message.attributes.items() if k != SIGNATURE}
    attributes[ERROR_CODE] = error.code
    attributes[ERROR] = error.message[:MAX_ERROR_CHARS]
    attributes["message_id"] = message.message_id
    # A failure here raises: the message is redelivered rather than lost.
    gw.publisher.publish(gw.settings.intake_dead_letter_topic, message.data, attributes=attributes)
    log.warning(
        "intake message dead-lettered",
        extra={"message_id": message.message_id, "code": error.code, "error": error.message},
    )
