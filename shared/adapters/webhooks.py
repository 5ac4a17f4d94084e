"""Sending webhooks over HTTP, to addresses that are safe to call, within one deadline.

A webhook URL is the caller's choice, so it must never make the gateway call into its own
network. The URL is taken apart and checked as at submit (``parse_webhook_url``); the host is
resolved once and every address it resolves to is checked (loopback, private, link-local,
shared, reserved, multicast, unspecified and the IPv6 forms that carry such an IPv4 address
are refused outside the local stack); then the connection goes to those very addresses, while
the request's ``Host``, TLS SNI and the certificate check still use the URL's name. A DNS answer
that changes between the check and the connection (rebinding) therefore changes nothing.
Redirects are not followed (a redirect is a second address nobody checked), proxies from the
environment are not used, and the whole delivery (connecting, the TLS handshake, sending, and
reading the answer's status) has one deadline: a receiver that trickles a byte at a time is cut
when it passes.

Written on urllib3 directly rather than with a kept SSRF library: ``requests-hardened`` (the
maintained one, for ``requests``) pins the address the same way, but its address policy is fixed
in the module (IPv4-compatible ``::a.b.c.d`` answers pass it, NAT64 and 6to4 are refused whatever
they carry, nothing between "loopback only" and "no filter" for the local stack) and it has no
deadline for the whole call, so both would still have to be written around it here.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import certifi
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError
from urllib3.util.ssl_match_hostname import CertificateError

from shared.domain.errors import Forbidden, TransientError, WebhookRejected
from shared.domain.webhooks import WebhookTarget, allowed_address, parse_webhook_url

SockAddr = tuple[Any, ...]
"""What ``getaddrinfo`` gives to connect to: ``(host, port)`` or ``(host, port, flow, scope)``."""


@dataclass(frozen=True)
class Route:
    """Where one delivery connects: checked addresses, in the resolver's order."""

    addresses: Sequence[tuple[socket.AddressFamily, SockAddr]]


def resolve(target: WebhookTarget, *, allow_private: bool) -> Route:
    """The addresses a delivery to ``target`` may connect to: all the host resolves to, each
    allowed; ``Forbidden`` if any is not (one bad answer among good ones is an attack)."""
    if target.address is not None:
        if not allowed_address(target.address, allow_private=allow_private):
            raise Forbidden(f"the webhook address {target.address} is not public", field="webhook")
        family = socket.AF_INET6 if target.address.version == 6 else socket.AF_INET
        return Route(addresses=((family, (str(target.address), target.port)),))
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # gaierror is an OSError
        raise TransientError(f"webhook host {target.host!r} does not resolve: {exc}") from exc
    addresses: list[tuple[socket.AddressFamily, SockAddr]] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if not allowed_address(address, allow_private=allow_private):
            raise Forbidden(
                f"the webhook host {target.host!r} resolves to a non-public address {address}",
                field="webhook",
            )
        addresses.append((family, sockaddr))
    if not addresses:
        raise TransientError(f"webhook host {target.host!r} has no IP address")
    return Route(addresses=tuple(addresses))


class Deadline:
    """The whole delivery's time. Socket timeouts bound each read or write, never the sum, so
    a timer shuts the connection down when the time is up; it holds a duplicate of the socket,
    so it can never touch a descriptor that was closed and handed to another connection."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._timer: threading.Timer | None = None
        self.connected = False
        self.expired = False

    def remaining(self) -> float:
        return max(0.0, self._at - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self.connected = True
            self._socket = sock.dup()
            self._timer = threading.Timer(self.remaining(), self._cut)
            self._timer.daemon = True
            self._timer.start()

    def _cut(self) -> None:
        with self._lock:
            if self._socket is None:
                return
            self.expired = True
            with contextlib.suppress(OSError):  # the peer closed it already: nothing to cut
                self._socket.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def _connect(conn: HTTPConnection, route: Route, deadline: Deadline) -> socket.socket:
    """A socket to the first of ``route``'s addresses that answers in time."""
    failure: OSError = TimeoutError("no time left to connect")
    for family, sockaddr in route.addresses:
        if deadline.remaining() <= 0:
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(deadline.remaining())
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        deadline.watch(sock)
        return sock
    raise failure


class _PinnedHTTPConnection(HTTPConnection):
    """Connects to the checked addresses, never to what the name resolves to now.

    ``_new_conn`` is the one place urllib3 opens the socket (TLS is set up on it afterwards, for
    ``self.host``), so overriding it keeps everything else of urllib3 as it is."""

    def __init__(self, host: str, port: int, *, route: Route, deadline: Deadline) -> None:
        super().__init__(host, port, timeout=deadline.remaining())
        self._route = route
        self._deadline = deadline

    def _new_conn(self) -> socket.socket:
        return _connect(self, self._route, self._deadline)


class _PinnedHTTPSConnection(HTTPSConnection):
    """As ``_PinnedHTTPConnection``; SNI and the certificate check use the URL's name."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        route: Route,
        deadline: Deadline,
        ssl_context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, timeout=deadline.remaining(), ssl_context=ssl_context)
        self._route = route
        self._deadline = deadline

    def _new_conn(self) -> socket.socket:
        return _connect(self, self._route, self._deadline)


_FAILURES = (HTTPError, http.client.HTTPException, OSError, CertificateError)
"""What urllib3, http.client, ssl and the socket raise for a receiver that failed us."""


class HttpWebhookSender:
    """``timeout_s`` bounds each whole delivery. ``ssl_context``: which certificates to trust
    (tests); certifi's, as ``requests`` trusts, by default."""

    def __init__(
        self,
        *,
        timeout_s: float,
        allow_http: bool = False,
        allow_private: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._allow_http = allow_http
        self._allow_private = allow_private
        self._ssl_context = ssl_context or ssl.create_default_context(cafile=certifi.where())

    def send(self, url: str, *, body: bytes, headers: Mapping[str, str]) -> None:
        target = parse_webhook_url(
            url, allow_http=self._allow_http, allow_private=self._allow_private
        )
        deadline = Deadline(self._timeout_s)
        try:
            route = resolve(target, allow_private=self._allow_private)
            status = self._post(target, route, deadline, body=body, headers=headers)
        finally:
            deadline.release()
        if not 200 <= status < 300:
            raise WebhookRejected(f"webhook answered HTTP {status}")

    def _post(
        self,
        target: WebhookTarget,
        route: Route,
        deadline: Deadline,
        *,
        body: bytes,
        headers: Mapping[str, str],
    ) -> int:
        conn: HTTPConnection
        if target.scheme == "https":
            conn = _PinnedHTTPSConnection(
                target.host,
                target.port,
                route=route,
                deadline=deadline,
                ssl_context=self._ssl_context,
            )
        else:
            conn = _PinnedHTTPConnection(target.host, target.port, route=route, deadline=deadline)
        try:
            conn.request(
                "POST",
                target.path,
                body=body,
                headers={"Content-Type": "application/json", **headers},
                preload_content=False,
            )
            conn.timeout = deadline.remaining()  # getresponse() sets it on the socket
            # The status is the answer; the body is never read, so its size does not matter.
            return conn.getresponse().status
        except _FAILURES as exc:
            raise TransientError(_describe(exc, deadline)) from exc
        finally:
            conn.close()


def _describe(exc: BaseException, deadline: Deadline) -> str:
    if deadline.expired or isinstance(exc, TimeoutError) or deadline.remaining() <= 0:
        phase = "ReadTimeout" if deadline.connected else "ConnectTimeout"
        return f"webhook not reached: {phase} (the delivery's limit is {deadline.seconds} s)"
    return f"webhook not reached: {type(exc).__name__}: {exc}"
