"""The webhook sender over real sockets, all on 127.0.0.1: it connects to the address it
checked (a DNS answer that changes in between changes nothing), keeps the name for ``Host``,
SNI and the certificate, cuts a receiver that trickles its answer at the one deadline, and
leaves callers a generic ``last_error``."""

from __future__ import annotations

import datetime as dt
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from functions.api.app import create_api
from infra.processes import free_port
from shared.adapters.webhooks import HttpWebhookSender
from shared.domain.errors import Forbidden, TransientError
from shared.settings import Settings, WebhookSettings
from shared.usecases.gateway import Gateway
from tests.support.api import GOOD
from tests.support.gateway import Fakes, fake_gateway, issue_key, make_fakes

PUBLIC = "93.184.215.14"
"""A public address the fake resolver answers; nothing ever connects to it (``no_egress``)."""


@dataclass
class Receiver:
    """Records each request (and the TLS server name it came with); answers ``status``."""

    status: int = 204
    received: list[dict[str, str]] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        request.get_data()
        self.received.append(dict(request.headers))
        return Response(status=self.status)(environ, start_response)


def serve(app: Receiver, ssl_context: ssl.SSLContext | None = None) -> Iterator[int]:
    port = free_port()
    server: BaseWSGIServer = make_server(
        "127.0.0.1", port, app, threaded=True, ssl_context=ssl_context
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield port
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def port(receiver: Receiver) -> Iterator[int]:
    yield from serve(receiver)


@dataclass
class Network:
    """A resolver the test scripts, and a record of every connection attempted."""

    answers: dict[str, list[str]] = field(default_factory=dict)
    """Per name, the address of each lookup in turn (the last one repeats)."""
    lookups: list[str] = field(default_factory=list)
    connects: list[str] = field(default_factory=list)


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> Network:
    net = Network()
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in net.answers:
            return real_getaddrinfo(host, port, *args, **kwargs)
        net.lookups.append(host)
        script = net.answers[host]
        address = script.pop(0) if len(script) > 1 else script[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    def connect(self: socket.socket, address: Any) -> None:
        net.connects.append(address[0])
        if address[0] != "127.0.0.1":
            # Network tests talk to 127.0.0.1 only: any other address is refused here.
            raise ConnectionRefusedError(f"no egress from tests ({address[0]})")
        real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return net


def test_a_name_rebound_to_loopback_after_the_check_is_never_connected_to(
    network: Network, receiver: Receiver, port: int
) -> None:
    # Public when checked, loopback for any later lookup: the classic rebinding answer.
    network.answers["rebind.example.com"] = [PUBLIC, "127.0.0.1"]
    sender = HttpWebhookSender(timeout_s=5.0, allow_http=True)  # production's address policy
    with pytest.raises(TransientError, match="webhook not reached"):
        sender.send(f"http://rebind.example.com:{port}/hook", body=b"{}", headers={})
    assert "127.0.0.1" not in network.connects
    assert network.connects == [PUBLIC]
    assert receiver.received == []


def test_a_name_that_resolves_to_loopback_is_refused_before_connecting(
    network: Network, receiver: Receiver, port: int
) -> None:
    network.answers["inside.example.com"] = ["127.0.0.1"]
    sender = HttpWebhookSender(timeout_s=5.0, allow_http=True)
    with pytest.raises(Forbidden, match="non-public"):
        sender.send(f"http://inside.example.com:{port}/hook", body=b"{}", headers={})
    assert network.connects == []


# -- the one deadline ---------------------------------------------------------------------

TRICKLE_S = 0.2
ANSWER = b"HTTP/1.1 204 No Content\r\n" + b"X-Pad: 1\r\n" * 3 + b"\r\n"
"""About 60 bytes, one every 0.2 s: 12 s in all, and never 0.2 s without a byte."""


class Trickle(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(65536)
        for byte in ANSWER:
            try:
                self.request.sendall(bytes([byte]))
            except OSError:
                return  # the sender hung up: what the test wants
            time.sleep(TRICKLE_S)


@pytest.fixture
def trickler() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_a_receiver_that_trickles_its_answer_is_cut_at_the_deadline(trickler: int) -> None:
    sender = HttpWebhookSender(timeout_s=1.0, allow_http=True, allow_private=True)
    started = time.monotonic()
    with pytest.raises(TransientError, match="webhook not reached: ReadTimeout"):
        sender.send(f"http://127.0.0.1:{trickler}/hook", body=b"{}", headers={})
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3.0, elapsed  # the deadline, not 12 s of bytes


# -- the name kept for Host, SNI and the certificate --------------------------------------


def certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_to_the_pinned_address_checks_the_certificate_for_the_urls_name(
    tmp_path: Path, network: Network
) -> None:
    cert_path, key_path = certificate(tmp_path, "hooks.test")
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert_path, key_path)
    app = Receiver()
    server_side.sni_callback = lambda _sock, name, _ctx: app.server_names.append(name)  # type: ignore[assignment,func-returns-value]
    served = serve(app, server_side)
    tls_port = next(served)
    try:
        network.answers["hooks.test"] = ["127.0.0.1"]
        network.answers["other.test"] = ["127.0.0.1"]
        trusted = ssl.create_default_context(cafile=str(cert_path))
        sender = HttpWebhookSender(timeout_s=5.0, allow_private=True, ssl_context=trusted)
        sender.send(f"https://hooks.test:{tls_port}/hook", body=b"{}", headers={})
        assert [headers["Host"] for headers in app.received] == [f"hooks.test:{tls_port}"]
        assert app.server_names == ["hooks.test"]
        # The same address under a name the certificate does not carry: refused by TLS.
        with pytest.raises(TransientError, match=r"SSLCertVerificationError.*other\.test"):
            sender.send(f"https://other.test:{tls_port}/hook", body=b"{}", headers={})
        assert len(app.received) == 1
    finally:
        next(served, None)


# -- what callers see ---------------------------------------------------------------------


@pytest.fixture
def local() -> tuple[Gateway, Fakes]:
    fakes = make_fakes()
    fakes.clock.now = datetime.now(UTC)
    hooks = WebhookSettings(signing_key="k" * 32, allow_http=True, allow_private=True)
    settings = Settings(bucket="test-bucket", webhooks=hooks)
    sender = HttpWebhookSender(timeout_s=5.0, allow_http=True, allow_private=True)
    return fake_gateway(settings, fakes, webhooks=sender), fakes


def last_error(gateway: Gateway, url: str) -> str:
    client = create_api(gateway).test_client()
    alice = issue_key(gateway, "alice")
    body = {**GOOD, "webhook": url, "webhook_events_filter": ["completed"]}
    job_id = client.post("/v1/tts/jobs", json=body, headers=alice).json["id"]  # type: ignore[index]
    client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)  # ends: "completed" is sent
    view = client.get(f"/v1/jobs/{job_id}", headers=alice).json
    [delivery] = view["webhook_deliveries"]  # type: ignore[index]
    return str(delivery["last_error"])


def test_callers_see_that_the_receiver_answered_an_error_not_which(
    local: tuple[Gateway, Fakes], receiver: Receiver, port: int
) -> None:
    receiver.status = 404
    assert last_error(local[0], f"http://127.0.0.1:{port}/hook") == "receiver answered an error"
    assert len(receiver.received) == 1


def test_callers_see_that_a_delivery_failed_not_why(local: tuple[Gateway, Fakes]) -> None:
    closed = free_port()  # nothing listens: connection refused
    assert last_error(local[0], f"http://127.0.0.1:{closed}/hook") == "delivery failed"
