"""A job's webhook: where to call, for which events, and the durable state of each delivery.

Deliveries live on the job document, so a retry survives any restart: each has its attempts, when
it is next due, and whether it was delivered or gave up. The job's transitions queue them (the
first move to ``running`` queues ``start``, the move into a terminal state ``completed``); whoever
made the move sends at once, and the monitor sends what is due later.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from shared.domain.errors import Forbidden

RETRY_AFTER_S = (10, 30, 120, 600, 1800)
"""Waits before the 2nd, 3rd... attempt; after the last one the delivery has failed."""
MAX_ATTEMPTS = len(RETRY_AFTER_S) + 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class WebhookEvent(StrEnum):
    START = "start"
    COMPLETED = "completed"


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Delivery(BaseModel):
    model_config = ConfigDict(frozen=True)

    event: WebhookEvent
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    next_at: datetime
    last_error: str | None = None
    queued_at: datetime | None = None
    """When the job's move queued it; ``None`` in documents written before it was kept."""

    def due(self, now: datetime) -> bool:
        return self.state is DeliveryState.PENDING and now >= self.next_at

    def message_id(self, job_id: str) -> str:
        """Its ``webhook-id``: the same on every retry of this delivery (a receiver dedupes on
        it), new for the next run's (a retried job queues its deliveries again)."""
        if self.queued_at is None:
            return f"{job_id}-{self.event.value}"
        stamp = (self.queued_at - _EPOCH) // timedelta(microseconds=1)
        return f"{job_id}-{self.event.value}-{stamp}"


class Webhook(BaseModel):
    model_config = ConfigDict(frozen=True)

    url: str
    events: tuple[WebhookEvent, ...] = (WebhookEvent.START, WebhookEvent.COMPLETED)
    deliveries: tuple[Delivery, ...] = ()

    @property
    def pending(self) -> bool:
        return any(d.state is DeliveryState.PENDING for d in self.deliveries)

    @property
    def due_at(self) -> datetime | None:
        """When the earliest pending delivery is due; ``None`` once none is pending."""
        return min(
            (d.next_at for d in self.deliveries if d.state is DeliveryState.PENDING), default=None
        )

    def queued(self, event: WebhookEvent, *, now: datetime) -> Webhook:
        """Add a delivery of ``event`` if the caller wants it and none exists yet."""
        if event not in self.events or any(d.event is event for d in self.deliveries):
            return self
        delivery = Delivery(event=event, next_at=now, queued_at=now)
        return self.model_copy(update={"deliveries": (*self.deliveries, delivery)})

    def reset(self) -> Webhook:
        """A job run again reports again: its earlier deliveries are history."""
        return self.model_copy(update={"deliveries": ()})

    def attempted(self, event: WebhookEvent, *, error: str | None, now: datetime) -> Webhook:
        """Record one attempt: delivered (``error`` is None), due again later, or failed."""
        updated = []
        for d in self.deliveries:
            if d.event is not event or d.state is not DeliveryState.PENDING:
                updated.append(d)
                continue
            attempts = d.attempts + 1
            if error is None:
                updated.append(
                    d.model_copy(
                        update={
                            "state": DeliveryState.DELIVERED,
                            "attempts": attempts,
                            "last_error": None,
                        }
                    )
                )
            elif attempts >= MAX_ATTEMPTS:
                updated.append(
                    d.model_copy(
                        update={
                            "state": DeliveryState.FAILED,
                            "attempts": attempts,
                            "last_error": error,
                        }
                    )
                )
            else:
                wait = timedelta(seconds=RETRY_AFTER_S[attempts - 1])
                updated.append(
                    d.model_copy(
                        update={"attempts": attempts, "next_at": now + wait, "last_error": error}
                    )
                )
        return self.model_copy(update={"deliveries": tuple(updated)})


def check_webhook_url(url: str, *, allow_http: bool, allow_private: bool) -> str:
    """The URL's host if a webhook may be sent there, as far as the URL itself says (scheme,
    a literal address); ``Forbidden`` naming the reason if not. Where a host name resolves to
    is checked again at every send."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        raise Forbidden("webhooks must use https", field="webhook")
    host = parts.hostname
    if not host:
        raise Forbidden("the webhook URL names no host", field="webhook")
    if not allow_private:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host  # a name: resolved and checked when sending
        if not public(address):
            raise Forbidden(f"the webhook address {host} is not public", field="webhook")
    return host


def public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Neither loopback, private, link-local, shared, reserved, multicast nor unspecified."""
    return address.is_global and not address.is_multicast
