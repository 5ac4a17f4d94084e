"""Webhooks over real HTTP: the gateway's sender against a receiver on 127.0.0.1 that verifies
each delivery with the independent ``standardwebhooks`` package, fails on purpose, redirects
and stalls."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook as Verifier
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from functions.api.app import create_api
from infra.processes import free_port
from shared.adapters.webhooks import HttpWebhookSender
from shared.domain.errors import Forbidden, TransientError
from shared.domain.webhooks import RETRY_AFTER_S
from shared.settings import Settings, WebhookSettings
from shared.usecases.gateway import Gateway
from shared.usecases.monitor import run_monitor
from tests.support.api import GOOD
from tests.support.gateway import Fakes, fake_gateway, issue_key, make_fakes
from tests.support.worker import run_instantly

# Generous: a delivery that answers at once must never time out on a busy machine.
SENDER_TIMEOUT_S = 30.0


@dataclass
class Receiver:
    """Answers each delivery with the next scripted status (then 204); 0 means stall until the
    test ends (``unstall``)."""

    statuses: list[int] = field(default_factory=list)
    unstall: threading.Event = field(default_factory=threading.Event)
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def __call__(self, environ: dict[str, object], start_response: object) -> object:
        request = Request(environ)  # type: ignore[arg-type]
        self.received.append((request.get_data(), dict(request.headers)))
        status = self.statuses.pop(0) if self.statuses else 204
        if status == 0:
            self.unstall.wait(60)
            status = 204
        response = Response(status=status)
        if status == 302:
            response.headers["Location"] = f"{self.url}/elsewhere"
        return response(environ, start_response)  # type: ignore[arg-type]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    app = Receiver()
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    app.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield app
    app.unstall.set()
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def fakes() -> Fakes:
    made = make_fakes()
    made.clock.now = datetime.now(UTC)  # the verifier checks the signed timestamp
    return made


@pytest.fixture
def gateway(fakes: Fakes) -> Gateway:
    # The local stack's allowances: plain http and loopback, which production refuses.
    hooks = WebhookSettings(signing_key="k" * 32, allow_http=True, allow_private=True)
    settings = Settings(bucket="test-bucket", webhooks=hooks)
    sender = HttpWebhookSender(timeout_s=SENDER_TIMEOUT_S, allow_http=True, allow_private=True)
    return fake_gateway(settings, fakes, webhooks=sender)


def test_a_receiver_failing_twice_verifies_the_third_delivery(
    gateway: Gateway, fakes: Fakes, receiver: Receiver
) -> None:
    client = create_api(gateway).test_client()
    alice = issue_key(gateway, "alice")
    receiver.statuses = [500, 503]
    body = {**GOOD, "webhook": f"{receiver.url}/hook", "webhook_events_filter": ["completed"]}
    job_id = client.post("/v1/tts/jobs", json=body, headers=alice).json["id"]  # type: ignore[index]

    run_instantly(gateway, job_id)
    for wait in RETRY_AFTER_S[:2]:
        fakes.clock.advance(wait)
        run_monitor(gateway)

    secret = client.get("/v1/webhooks/secret", headers=alice).json["secret"]  # type: ignore[index]
    assert len(receiver.received) == 3
    # One event of this run of the job, retried under one id.
    [message_id] = {headers["Webhook-Id"] for _, headers in receiver.received}
    assert message_id.startswith(f"{job_id}-completed-")
    for data, headers in receiver.received:
        event = Verifier(secret).verify(data, headers)
        assert (event["type"], event["data"]["id"]) == ("job.completed", job_id)
    view = client.get(f"/v1/jobs/{job_id}", headers=alice).json
    assert view["webhook_deliveries"] == [  # type: ignore[index]
        {"event": "completed", "state": "delivered", "attempts": 3, "last_error": None}
    ]


def test_a_redirect_is_a_failed_delivery_and_is_not_followed(receiver: Receiver) -> None:
    receiver.statuses = [302]
    sender = HttpWebhookSender(timeout_s=SENDER_TIMEOUT_S, allow_http=True, allow_private=True)
    with pytest.raises(TransientError, match="302"):
        sender.send(f"{receiver.url}/hook", body=b"{}", headers={})
    assert len(receiver.received) == 1  # /elsewhere, an address nobody checked, never called


def test_a_stalled_receiver_times_out(receiver: Receiver) -> None:
    receiver.statuses = [0]  # answers only once the test is over
    sender = HttpWebhookSender(timeout_s=0.3, allow_http=True, allow_private=True)
    with pytest.raises(TransientError, match="webhook not reached: ReadTimeout"):
        sender.send(f"{receiver.url}/hook", body=b"{}", headers={})
    assert len(receiver.received) == 1


def test_production_settings_refuse_the_same_receiver(receiver: Receiver) -> None:
    sender = HttpWebhookSender(timeout_s=SENDER_TIMEOUT_S)
    with pytest.raises(Forbidden, match="https"):
        sender.send(f"{receiver.url}/hook", body=b"{}", headers={})
    assert receiver.received == []
