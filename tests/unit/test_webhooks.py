"""Webhooks over fakes: signed the Standard Webhooks way (checked by the independent
``standardwebhooks`` verifier), retried from the job's own state, recorded as failed when the
retries run out, and never sent where they must not go."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from standardwebhooks import Webhook as Verifier
from standardwebhooks import WebhookVerificationError

from shared.adapters.webhooks import HttpWebhookSender, resolve
from shared.domain.errors import Forbidden, TransientError
from shared.domain.jobs import Job
from shared.domain.webhooks import MAX_ATTEMPTS, RETRY_AFTER_S, parse_webhook_url
from shared.settings import MonitorSettings, Settings, WebhookSettings
from shared.usecases.gateway import Gateway
from shared.usecases.monitor import run_monitor
from tests.support.api import GOOD, checked
from tests.support.gateway import Fakes, fake_gateway, issue_key
from tests.support.worker import run_instantly

HOOK = "https://hooks.example.com/tts"


@pytest.fixture
def gateway(fakes: Fakes) -> Gateway:
    # Receivers check the signed timestamp against their own clock: start near the real time.
    fakes.clock.now = datetime.now(UTC)
    settings = Settings(bucket="test-bucket", webhooks=WebhookSettings(signing_key="k" * 32))
    return fake_gateway(settings, fakes)


@pytest.fixture
def client(gateway: Gateway) -> FlaskClient:
    from functions.api.app import create_api

    return create_api(gateway).test_client()


def submit(client: FlaskClient, headers: dict[str, str], **options: object) -> str:
    body = {**GOOD, "webhook": HOOK, **options}
    response = checked(
        "POST", "/v1/tts/jobs", client.post("/v1/tts/jobs", json=body, headers=headers)
    )
    assert response.status_code == 202, response.json
    return str(response.json["id"])  # type: ignore[index]


def test_start_and_completed_are_signed_so_a_standard_verifier_accepts_them(
    client: FlaskClient, gateway: Gateway, fakes: Fakes
) -> None:
    alice = issue_key(gateway, "alice")
    job_id = submit(client, alice)
    run_instantly(replace(gateway, webhooks=None), job_id)  # as the worker does: no sender
    assert fakes.webhooks.calls == []
    assert run_monitor(gateway).called_back == [job_id]  # the control plane sends both
    secret = checked("GET", "/v1/webhooks/secret", client.get("/v1/webhooks/secret", headers=alice))
    verifier = Verifier(secret.json["secret"])  # type: ignore[index]
    events = []
    for url, body, headers in fakes.webhooks.calls:
        assert url == HOOK
        payload = verifier.verify(body, headers)  # raises on a bad signature
        events.append((payload["type"], payload["data"]["state"], headers["webhook-id"]))
    # Each body is the job as it is when sent: the start, sent late, sees it finished.
    assert [(kind, state) for kind, state, _ in events] == [
        ("job.start", "succeeded"),
        ("job.completed", "succeeded"),
    ]
    assert [message_id.rsplit("-", 1)[0] for _, _, message_id in events] == [
        f"{job_id}-start",
        f"{job_id}-completed",
    ]
    forged = {**fakes.webhooks.calls[0][2], "webhook-signature": "v1,AAAA"}
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        verifier.verify(fakes.webhooks.calls[0][1], forged)
    # Another owner's secret verifies nothing of alice's.
    bob = issue_key(gateway, "bob")
    other = client.get("/v1/webhooks/secret", headers=bob).json["secret"]  # type: ignore[index]
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        Verifier(other).verify(fakes.webhooks.calls[0][1], fakes.webhooks.calls[0][2])


def test_a_receiver_that_fails_twice_gets_the_event_on_the_third_try(
    client: FlaskClient, gateway: Gateway, fakes: Fakes
) -> None:
    alice = issue_key(gateway, "alice")
    job_id = submit(client, alice, webhook_events_filter=["completed"])
    fakes.webhooks.failures = 2
    run_instantly(gateway, job_id)  # first attempt: fails
    assert fakes.webhooks.calls == []
    run_monitor(gateway)  # not yet due
    assert fakes.webhooks.calls == []
    fakes.clock.advance(RETRY_AFTER_S[0])
    assert run_monitor(gateway).called_back == [job_id]  # second attempt: fails
    fakes.clock.advance(RETRY_AFTER_S[1])
    # A fresh process (the state is on the job, not in memory) makes the third attempt.
    restarted = fake_gateway(gateway.settings, fakes)
    assert run_monitor(restarted).called_back == [job_id]
    [(_, body, _)] = fakes.webhooks.calls
    assert json.loads(body)["type"] == "job.completed"
    view = client.get(f"/v1/jobs/{job_id}", headers=alice).json
    assert view["webhook_deliveries"] == [  # type: ignore[index]
        {"event": "completed", "state": "delivered", "attempts": 3, "last_error": None}
    ]
    assert run_monitor(gateway).called_back == []


def test_a_receiver_that_never_answers_is_recorded_as_failed_on_the_job(
    client: FlaskClient, gateway: Gateway, fakes: Fakes
) -> None:
    alice = issue_key(gateway, "alice")
    job_id = submit(client, alice, webhook_events_filter=["completed"])
    fakes.webhooks.failures = 1000
    run_instantly(gateway, job_id)
    for wait in RETRY_AFTER_S:
        fakes.clock.advance(wait)
        run_monitor(gateway)
    view = client.get(f"/v1/jobs/{job_id}", headers=alice).json
    [delivery] = view["webhook_deliveries"]  # type: ignore[index]
    assert (delivery["state"], delivery["attempts"]) == ("failed", MAX_ATTEMPTS)
    assert delivery["last_error"] == "delivery failed"  # the precise reason is only logged
    assert fakes.jobs.get(job_id).webhook_due is False  # type: ignore[union-attr]


class FlakyReceiver:
    """Sees every attempt, and fails the first ``failures`` of them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[dict[str, str]] = []

    def send(self, url: str, *, body: bytes, headers: Mapping[str, str]) -> None:
        self.attempts.append(dict(headers))
        if len(self.attempts) <= self.failures:
            raise TransientError("the receiver answered HTTP 503 (fake)")


def forget_deliveries(job: Job) -> Job:
    assert job.webhook is not None
    return job.model_copy(update={"webhook": job.webhook.model_copy(update={"deliveries": ()})})


def test_a_delivery_keeps_its_id_across_retries_and_a_retried_job_reports_with_new_ids(
    gateway: Gateway, fakes: Fakes
) -> None:
    from functions.api.app import create_api

    receiver = FlakyReceiver(failures=1)
    gw = fake_gateway(gateway.settings, fakes, webhooks=receiver)
    client = create_api(gw).test_client()
    alice = issue_key(gw, "alice")
    job_id = submit(client, alice, webhook_events_filter=["completed"])
    client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)  # the first attempt fails
    fakes.clock.advance(RETRY_AFTER_S[0])
    assert run_monitor(gw).called_back == [job_id]  # the second is delivered
    fakes.clock.advance(1)
    assert client.post(f"/v1/jobs/{job_id}/retry", headers=alice).status_code == 202
    fakes.jobs.update(job_id, forget_deliveries)  # as ``Job.retry`` does: it reports again
    client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)  # ends again: reports again
    first, retried, again = (headers["webhook-id"] for headers in receiver.attempts)
    assert first == retried  # the receiver dedupes the retry of one delivery
    assert again != first  # ...and must not drop the next run's report
    assert {first.rsplit("-", 1)[0], again.rsplit("-", 1)[0]} == {f"{job_id}-completed"}


def test_webhooks_due_later_never_hide_those_due_now(gateway: Gateway, fakes: Fakes) -> None:
    from functions.api.app import create_api

    small = gateway.settings.model_copy(update={"monitor": MonitorSettings(batch=2, pages=1)})
    gw = fake_gateway(small, fakes)
    client = create_api(gw).test_client()
    alice = issue_key(gw, "alice")
    # Two older jobs whose receiver failed twice: due again only in 30 s.
    later = [submit(client, alice, webhook_events_filter=["completed"]) for _ in range(2)]
    fakes.webhooks.failures = 4
    for job_id in later:
        run_instantly(gw, job_id)
    fakes.clock.advance(RETRY_AFTER_S[0])
    assert sorted(run_monitor(gw).called_back) == sorted(later)
    # A newer job whose first attempt failed: due again in 10 s, before them.
    now_due = submit(client, alice, webhook_events_filter=["completed"])
    fakes.webhooks.failures = 1
    run_instantly(gw, now_due)
    fakes.clock.advance(RETRY_AFTER_S[0])
    assert run_monitor(gw).called_back == [now_due]
    [(_, body, _)] = fakes.webhooks.calls
    assert json.loads(body)["data"]["id"] == now_due
    stored = fakes.jobs.get(later[0])
    assert stored is not None
    assert stored.webhook_due_at == fakes.clock.now + timedelta(seconds=RETRY_AFTER_S[1] - 10)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/tts", "https"),
        ("https://127.0.0.1/hook", "not public"),
        ("https://10.0.0.7/hook", "not public"),
        ("https://169.254.169.254/latest/meta-data", "not public"),
        ("https://[::1]/hook", "not public"),
        ("https://192.168.1.20/hook", "not public"),
    ],
)
def test_webhooks_never_go_to_private_loopback_or_link_local_addresses(
    client: FlaskClient, gateway: Gateway, url: str, why: str
) -> None:
    alice = issue_key(gateway, "alice")
    body = {**GOOD, "webhook": url}
    response = checked(
        "POST", "/v1/tts/jobs", client.post("/v1/tts/jobs", json=body, headers=alice)
    )
    assert response.status_code == 422
    assert why in response.json["error"]["message"]  # type: ignore[index]
    # The same URL in a job written before the check: refused at send, nothing connected.
    with pytest.raises(Forbidden, match=why):
        HttpWebhookSender(timeout_s=1.0).send(url, body=b"{}", headers={})


def test_a_name_that_resolves_to_loopback_is_refused_when_sending() -> None:
    target = parse_webhook_url("https://localhost/hook", allow_http=False, allow_private=False)
    with pytest.raises(Forbidden, match="non-public"):
        resolve(target, allow_private=False)
    with pytest.raises(Forbidden, match="non-public"):
        HttpWebhookSender(timeout_s=1.0).send("https://localhost/hook", body=b"{}", headers={})
    # The local stack may call its own receiver.
    local = parse_webhook_url("http://localhost:9/hook", allow_http=True, allow_private=True)
    route = resolve(local, allow_private=True)
    assert {sockaddr[:2] for _, sockaddr in route.addresses} <= {("127.0.0.1", 9), ("::1", 9)}


def test_webhooks_are_refused_while_the_deployment_has_no_signing_key(
    fakes: Fakes,
) -> None:
    from functions.api.app import create_api

    gw = fake_gateway(Settings(bucket="test-bucket"), fakes)
    client = create_api(gw).test_client()
    alice = issue_key(gw, "alice")
    response = client.post("/v1/tts/jobs", json={**GOOD, "webhook": HOOK}, headers=alice)
    assert response.status_code == 422
    assert "not configured" in response.json["error"]["message"]  # type: ignore[index]
