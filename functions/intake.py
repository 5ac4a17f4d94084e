"""The intake entry point: Pub/Sub push from the intake topic's subscription (functions-framework
turns the push into a ``messagePublished`` CloudEvent). One message, one call into the core."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from datetime import UTC, datetime
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
        published_at=published_at(raw.get("publishTime") or raw.get("publish_time")),
    )
    take(_gateway(), message)


def published_at(value: object) -> datetime | None:
    """Pub/Sub's RFC 3339 publish time (``2026-01-01T00:00:00.123456789Z``); None when absent
    or unreadable, and the intake then takes the time it was received."""
    if not isinstance(value, str):
        return None
    text = re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", value.strip())  # datetime keeps microseconds
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
