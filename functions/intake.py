"""The intake entry point: Pub/Sub push from the intake topic's subscription (functions-framework
turns the push into a ``messagePublished`` CloudEvent). One message, one call into the core."""

from __future__ import annotations

import base64
import binascii
import logging
from functools import cache

import functions_framework
from cloudevents.http import CloudEvent

from functions.bootstrap import bootstrap
from shared.usecases.gateway import Gateway
from shared.usecases.intake import IntakeMessage, take

log = logging.getLogger(__name__)


@cache
def _gateway() -> Gateway:
    return bootstrap()


@functions_framework.cloud_event
def intake(event: CloudEvent) -> None:
    """Returning acknowledges (a job exists, or the message was dead-lettered with its error);
    raising (a dependency is down) makes Pub/Sub deliver it again."""
    envelope = event.get_data() or {}
    raw = envelope.get("message") if isinstance(envelope, dict) else None
    if not isinstance(raw, dict):
        log.error("an intake push without a message")
        return  # nothing to keep or retry
    try:
        data = base64.b64decode(raw.get("data") or "")
    except (binascii.Error, ValueError):
        log.error("an intake push whose data is not base64")  # Pub/Sub never sends one
        return
    attributes = raw.get("attributes") or {}
    message = IntakeMessage(
        data=data,
        attributes={str(k): str(v) for k, v in attributes.items()},
        message_id=str(raw.get("messageId") or raw.get("message_id") or event["id"]),
    )
    take(_gateway(), message)
