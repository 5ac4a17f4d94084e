"""Storage-event entry points: the voice registry behind the bucket.

Deployed as their own functions with torch in their requirements (validation loads ``.pt``
files with ``torch.load(weights_only=True)``); the HTTP API never imports this module.
Event functions are deployed with retry on: a transient error raised here is redelivered,
a permanent one is logged and swallowed so a poison event cannot loop forever.
"""

from __future__ import annotations

import logging
from functools import cache

import functions_framework
from cloudevents.http import CloudEvent

from functions.bootstrap import bootstrap
from shared.domain.errors import InvalidRequest, PermanentError
from shared.usecases.gateway import Gateway
from shared.usecases.registry import (
    Registration,
    StoredObject,
    on_object_deleted,
    on_object_finalized,
)

log = logging.getLogger(__name__)

FINALIZED = "google.cloud.storage.object.v1.finalized"
DELETED = "google.cloud.storage.object.v1.deleted"


@cache
def _gateway() -> Gateway:
    return bootstrap()


@functions_framework.cloud_event
def voice_object_event(event: CloudEvent) -> None:
    """GCS finalize / delete on the voice bucket: register, update, quarantine or forget."""
    outcome = handle_storage_event(_gateway(), event_type=event["type"], data=event.get_data())
    log.info("storage event handled", extra={"type": event["type"], "outcome": outcome.value})


def handle_storage_event(gw: Gateway, *, event_type: str, data: object) -> Registration:
    try:
        obj = parse_object(data)
    except InvalidRequest as exc:
        log.error("malformed storage event dropped", extra={"error": exc.message})
        return Registration.IGNORED
    try:
        if event_type == FINALIZED:
            return on_object_finalized(gw, obj)
        if event_type == DELETED:
            return on_object_deleted(gw, obj)
    except PermanentError as exc:
        log.error("storage event failed", extra={"object": obj.name, "error": exc.message})
        return Registration.IGNORED
    return Registration.IGNORED


def parse_object(data: object) -> StoredObject:
    """The event's object resource; int64 fields arrive as JSON strings."""
    if not isinstance(data, dict):
        raise InvalidRequest("storage event data is not an object")
    try:
        metadata = data.get("metadata") or {}
        return StoredObject(
            bucket=str(data["bucket"]),
            name=str(data["name"]),
            generation=int(data["generation"]),
            size=int(data.get("size", 0)),
            md5=data.get("md5Hash"),
            content_type=data.get("contentType"),
            metadata={str(k): str(v) for k, v in dict(metadata).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"storage event lacks a valid {exc}") from exc
