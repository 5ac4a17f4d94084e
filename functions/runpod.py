"""RunPod entry points: the dispatcher (Pub/Sub push from the RunPod-filtered subscription)
and the webhook RunPod calls when a job ends. Neither imports the ``runpod`` package."""

from __future__ import annotations

import base64
import logging
from functools import cache

import flask
import functions_framework
from cloudevents.http import CloudEvent

from functions.bootstrap import bootstrap, runpod_client
from shared.adapters import tracing
from shared.adapters.runpod_api import RunPodClient
from shared.domain.errors import BackendUnavailable, GatewayError, InvalidRequest, Unauthenticated
from shared.usecases.dispatch import Dispatch, complete, dispatch, verify_webhook
from shared.usecases.gateway import Gateway
from shared.wire import json_text
from shared.wire.messages import JobMessage
from shared.wire.runpod_status import RunPodStatus

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 1 << 20


@cache
def _gateway() -> Gateway:
    return bootstrap()


@cache
def _runpod() -> RunPodClient:
    return runpod_client(_gateway().settings)


@functions_framework.cloud_event
def runpod_dispatch(event: CloudEvent) -> None:
    """One job message: claim, sign, submit. Raising makes Pub/Sub redeliver (then dead-letter)."""
    data = event.get_data() or {}
    try:
        raw = base64.b64decode(data["message"]["data"])
        message = JobMessage.decode(raw)
    except (KeyError, TypeError, ValueError, InvalidRequest) as exc:
        # A poison message: refused every time, so the subscription dead-letters it after its
        # delivery attempts, where it stays inspectable (as the 4090 nacks one).
        log.error("undecodable job message", extra={"error": str(exc)})
        raise InvalidRequest("undecodable job message") from exc
    attributes = data["message"].get("attributes") or {}
    with tracing.consumed(attributes, name="tts-jobs dispatch", job_id=message.job_id):
        outcome = dispatch(_gateway(), _runpod(), message)
    if outcome is Dispatch.RETRY:
        raise BackendUnavailable(f"RunPod did not take job {message.job_id}; redeliver")


@functions_framework.http
def runpod_webhook(request: flask.Request) -> flask.Response:
    """RunPod's completion call: authenticated by a per-job HMAC token in the URL."""
    gw = _gateway()
    job_id = request.args.get("job", "")
    token = request.args.get("token", "")
    try:
        verify_webhook(gw, job_id=job_id, token=token)
        if (request.content_length or 0) > MAX_WEBHOOK_BYTES:
            raise InvalidRequest("webhook body too large")
        status = RunPodStatus.parse(_json_body(request))
        outcome = complete(gw, job_id=job_id, status=status)
    except Unauthenticated:
        log.warning("webhook with a bad token refused", extra={"job_id": job_id})
        return _reply(401, error="unauthenticated")
    except GatewayError as exc:
        if exc.retryable:
            # RunPod retries a failed webhook twice; the monitor polls after that.
            return _reply(503, error=exc.code)
        log.warning("webhook refused", extra={"job_id": job_id, "error": exc.message})
        return _reply(400, error=exc.code, message=exc.message)
    log.info("webhook handled", extra={"job_id": job_id, "outcome": outcome.value})
    return _reply(200, outcome=outcome.value)


def _json_body(request: flask.Request) -> object:
    """The decoded body, or ``None`` when it is no JSON (or nests too deep to be a status):
    read with a bounded depth, since Flask's decoder crashes on deep nesting."""
    if not request.is_json:
        return None
    try:
        return json_text.loads(request.get_data())
    except ValueError:
        return None


def _reply(status: int, **body: str) -> flask.Response:
    response = flask.jsonify(body)
    response.status_code = status
    return response
