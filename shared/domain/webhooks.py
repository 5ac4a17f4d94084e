"""A job's webhook: where to call, for which events, and the durable state of each delivery.

Deliveries live on the job document, so a retry survives any restart: each has its attempts, when
it is next due, and whether it was delivered or gave up. The job's transitions queue them (the
first move to ``running`` queues ``start``, the move into a terminal state ``completed``); whoever
made the move sends at once if it runs in the control plane (the GPU worker never calls out:
its gateway has no sender), and the monitor sends what is due later.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from shared.domain.errors import Forbidden, InvalidRequest

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


MAX_URL_CHARS = 2048
_URL_CHARS = re.compile(r"[\x21-\x7e]+")
"""Printable ASCII without spaces: nothing a parser could normalise into another URL."""
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_NUMBER = re.compile(r"0x[0-9a-f]*|[0-9]+", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NOT_PUBLIC = (
    # Not global, though this Python's tables (3.11) say they are.
    ipaddress.IPv4Network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.IPv4Network("192.88.99.0/24"),  # the 6to4 relays' anycast
    ipaddress.IPv6Network("fec0::/10"),  # site-local, deprecated but routable inside a site
    ipaddress.IPv6Network("3fff::/20"),  # documentation
)


@dataclass(frozen=True, kw_only=True)
class WebhookTarget:
    """A webhook URL taken apart, every part checked."""

    scheme: str
    host: str
    """A DNS name (ASCII, lower case) or an address, without brackets: the name a request's
    ``Host`` header, TLS SNI and the certificate check use."""
    port: int
    path: str
    """The request line's target: the path and query, at least ``/``."""
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    """The host when the URL names an address; ``None`` for a name, resolved at each send."""


def parse_webhook_url(url: str, *, allow_http: bool, allow_private: bool) -> WebhookTarget:
    """The URL's parts if a webhook may be sent there, as far as the URL itself says;
    ``InvalidRequest`` naming the field if it is not a URL this gateway takes, ``Forbidden``
    if its scheme or its literal address is not allowed. Where a name resolves to is checked
    at each send, on the very addresses the connection uses."""
    if len(url) > MAX_URL_CHARS:
        raise _invalid(f"the webhook URL is longer than {MAX_URL_CHARS} characters")
    if not _URL_CHARS.fullmatch(url):
        raise _invalid(
            "the webhook URL must be printable ASCII without spaces (percent-encode the path, "
            "write an international host name in its xn-- form)"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced or invalid bracketed host
        raise _invalid(f"the webhook URL is malformed: {exc}") from exc
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        raise Forbidden("webhooks must use https", field="webhook")
    if "@" in parts.netloc:
        # It would be stored on the job, shown in its view and logged: never a place for a secret.
        raise _invalid("the webhook URL must not carry a user name or password")
    host, address, port_text = _host_and_port(parts.netloc)
    port = 443 if parts.scheme == "https" else 80
    if port_text:
        if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            raise _invalid(f"the webhook URL's port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    if address is not None and not allowed_address(address, allow_private=allow_private):
        raise Forbidden(f"the webhook address {address} is not public", field="webhook")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WebhookTarget(scheme=parts.scheme, host=host, port=port, path=path, address=address)


def _host_and_port(
    netloc: str,
) -> tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address | None, str]:
    if netloc.startswith("["):
        inside, _, after = netloc[1:].partition("]")
        if after and not after.startswith(":"):
            raise _invalid("the webhook URL has text between its address and its port")
        if "%" in inside:
            raise _invalid("the webhook address must not name a zone (%)")
        try:
            v6 = ipaddress.IPv6Address(inside)
        except ValueError as exc:
            raise _invalid(f"the webhook host [{inside}] is not an IPv6 address") from exc
        return str(v6), v6, after[1:]
    host, _, port_text = netloc.partition(":")
    if ":" in port_text or "[" in netloc or "]" in netloc:
        raise _invalid("an IPv6 address in a webhook URL must be in brackets")
    host = host.lower()
    name = host.removesuffix(".")
    if not name or len(name) > 253:
        raise _invalid("the webhook URL names no valid host")
    labels = name.split(".")
    if _NUMBER.fullmatch(labels[-1]):
        # A resolver reads a host ending in a number as an IPv4 address in any of the forms
        # inet_aton takes (127.1, 0x7f.0.0.1, 2130706433): only dotted decimal is taken, so the
        # address checked is the one a connection would reach.
        try:
            v4 = ipaddress.IPv4Address(name)
        except ValueError as exc:
            raise _invalid(f"the webhook host {host!r} is not a dotted-decimal address") from exc
        return str(v4), v4, port_text
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise _invalid(f"the webhook host {host!r} is not a valid host name")
    return host, None, port_text


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(message, field="webhook")


def allowed_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_private: bool
) -> bool:
    """Whether a webhook may connect to ``address``: a public one, or any where the deployment
    allows private addresses (the local stack)."""
    return allow_private or public(address)


def public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Neither loopback, private, link-local, shared, reserved, multicast nor unspecified; an
    IPv6 address that carries an IPv4 one (mapped, compatible, NAT64, 6to4) is judged by the
    IPv4 address it reaches. Teredo (2001::/32) is never public (Python counts it private)."""
    if isinstance(address, ipaddress.IPv6Address):
        address = embedded_ipv4(address) or address
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not any(address in network for network in _NOT_PUBLIC)
    )


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches: ``::ffff:a.b.c.d`` (mapped), ``::a.b.c.d``
    (compatible), ``64:ff9b::a.b.c.d`` (NAT64) and ``2002:AABB:CCDD::`` (6to4)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    value = int(address)
    if value >> 32 == 0 or address in _NAT64:
        return ipaddress.IPv4Address(value & 0xFFFF_FFFF)
    return None
