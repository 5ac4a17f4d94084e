"""Calling back: a job's webhook deliveries, signed the Standard Webhooks way.

Each owner has one signing secret, derived from the deployment's key (``GET /v1/webhooks/secret``
shows it); every delivery carries ``webhook-id`` (job, event and when the delivery was queued:
the same on every retry of it, so a receiver dedupes on it, and new when a retried job reports
again), ``webhook-timestamp`` and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of
"id.timestamp.body">``), as the ``standardwebhooks`` libraries verify. The body is the job as
``GET /v1/jobs/{id}`` shows it, under ``type`` (``job.start`` / ``job.completed``) and ``data``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import datetime

from standardwebhooks import Webhook as Signer

from shared.domain.errors import (
    ConfigurationError,
    Forbidden,
    GatewayError,
    InvalidRequest,
    InvalidTransition,
    TransientError,
    WebhookRejected,
)
from shared.domain.jobs import Job
from shared.domain.webhooks import Delivery, WebhookEvent
from shared.usecases.gateway import Gateway
from shared.usecases.sweeps import sweep
from shared.wire.views import JobView

log = logging.getLogger(__name__)

NOT_ALLOWED = "address not allowed"
INVALID_URL = "invalid webhook URL"
RECEIVER_ERROR = "receiver answered an error"
DELIVERY_FAILED = "delivery failed"
NOT_CONFIGURED = "webhooks are not configured"
"""What a caller sees as a delivery's ``last_error``: the precise reason (a status, a refused
connection, a timeout) would make the gateway a port scanner of whatever it can reach, so it
goes to the log only."""


def owner_secret(gw: Gateway, owner: str) -> str:
    """The owner's signing secret, in the ``whsec_`` form the Standard Webhooks libraries take."""
    key = gw.settings.webhooks.signing_key.get_secret_value()
    if not key:
        raise ConfigurationError("webhooks are not configured (TTS_WEBHOOKS__SIGNING_KEY)")
    digest = hmac.new(key.encode(), f"webhook-secret:{owner}".encode(), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(digest).decode()


def deliver_due(gw: Gateway, job: Job) -> Job:
    """Send every delivery of ``job`` that is due now; record each attempt on the job."""
    webhook = job.webhook
    if webhook is None or gw.webhooks is None:
        # A gateway without a sender (the GPU worker's) never calls out: the deliveries stay
        # due on the job, and the monitor sends them.
        return job
    now = gw.clock()
    for delivery in webhook.deliveries:
        if not delivery.due(now):
            continue
        error = _send(gw, job, delivery)
        try:
            job = gw.jobs.update(job.id, _attempted(delivery.event, error=error, now=now))
        except (InvalidTransition, TransientError) as exc:
            # Still pending on the job: the monitor's next pass sends it again.
            log.warning("webhook attempt not recorded", extra={"job_id": job.id, "error": str(exc)})
            return job
    return job


def _attempted(event: WebhookEvent, *, error: str | None, now: datetime) -> Callable[[Job], Job]:
    return lambda job: job.webhook_attempted(event, error=error, now=now)


def _send(gw: Gateway, job: Job, delivery: Delivery) -> str | None:
    """``None`` once delivered, else the error the caller may see."""
    assert job.webhook is not None
    assert gw.webhooks is not None
    event = delivery.event
    body = json.dumps(
        {"type": f"job.{event.value}", "data": JobView.of(job, brief=True).model_dump(mode="json")}
    )
    message_id = delivery.message_id(job.id)
    now = gw.clock()
    try:
        signer = Signer(owner_secret(gw, job.owner))
        headers = {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(message_id, now, body),
        }
        gw.webhooks.send(job.webhook.url, body=body.encode(), headers=headers)
    except GatewayError as exc:  # the sender's every failure: recorded, never raised
        log.warning(
            "webhook not delivered",
            extra={"job_id": job.id, "event": event.value, "code": exc.code, "error": exc.message},
        )
        return public_error(exc)
    log.info("webhook delivered", extra={"job_id": job.id, "event": event.value})
    return None


def public_error(exc: GatewayError) -> str:
    """The generic reason a caller sees for a failed attempt."""
    if isinstance(exc, Forbidden):
        return NOT_ALLOWED
    if isinstance(exc, InvalidRequest):
        return INVALID_URL
    if isinstance(exc, WebhookRejected):
        return RECEIVER_ERROR
    if isinstance(exc, ConfigurationError):
        return NOT_CONFIGURED
    return DELIVERY_FAILED


def deliver_pending(gw: Gateway) -> list[str]:
    """The monitor's pass: deliveries due again after a failure, or left by a dead process.
    The query selects only jobs with a delivery due now (``webhook_due_at``), and each attempt
    moves the job's due time on, so deliveries due later never hide those due now."""
    now = gw.clock()

    def deliver(job: Job) -> bool:
        deliver_due(gw, job)
        return True

    return sweep(
        gw,
        name="webhooks",
        page=lambda limit, after: gw.jobs.find_webhooks_due(
            now=now, limit=limit, start_after=after
        ),
        act=deliver,
    )
