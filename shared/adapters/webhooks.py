"""Sending webhooks over HTTP, to addresses that are safe to call.

A webhook URL is the caller's choice, so before each call its host is resolved and every
address it resolves to is checked: loopback, private, link-local, shared, reserved, multicast
and unspecified addresses are refused (outside the local stack), so a job cannot make the
gateway call into its own network. Redirects are not followed, since a redirect is a second
address nobody checked. What remains is a DNS answer that changes between the check and the
connection; the short timeout and the refusal of redirects keep that window small.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

import requests

from shared.domain.errors import Forbidden, TransientError
from shared.domain.webhooks import check_webhook_url, public

MAX_RESPONSE_BYTES = 64 * 1024


def check_url(url: str, *, allow_http: bool, allow_private: bool) -> str:
    """As ``check_webhook_url``, and every address the host resolves to must be public."""
    host = check_webhook_url(url, allow_http=allow_http, allow_private=allow_private)
    if allow_private:
        return host
    port = urlsplit(url).port or 443
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise Forbidden(f"the webhook host {host!r} does not resolve", field="webhook") from exc
    if not all(public(ipaddress.ip_address(info[4][0])) for info in infos):
        raise Forbidden(
            f"the webhook host {host!r} resolves to a non-public address", field="webhook"
        )
    return host


class HttpWebhookSender:
    def __init__(
        self, *, timeout_s: float, allow_http: bool = False, allow_private: bool = False
    ) -> None:
        self._timeout_s = timeout_s
        self._allow_http = allow_http
        self._allow_private = allow_private
        self._session = requests.Session()

    def send(self, url: str, *, body: bytes, headers: Mapping[str, str]) -> None:
        check_url(url, allow_http=self._allow_http, allow_private=self._allow_private)
        try:
            response = self._session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", **headers},
                timeout=self._timeout_s,
                allow_redirects=False,
                stream=True,
            )
            response.raw.read(MAX_RESPONSE_BYTES, decode_content=False)
            response.close()
        except requests.RequestException as exc:
            raise TransientError(f"webhook not reached: {type(exc).__name__}") from exc
        if not 200 <= response.status_code < 300:
            raise TransientError(f"webhook answered HTTP {response.status_code}")
