"""Webhooks that cannot be turned against the gateway: every URL fully checked at submit, the
IPv6 forms that carry a private IPv4 address refused, an old job's bad URL never crashing a run
or a monitor pass, callers seeing a generic reason only, and the GPU worker (on the home
network) never calling out. Over fakes; the network side is tests/integration/
test_webhook_pinning.py."""

from __future__ import annotations

import ast
import json
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from shared.adapters.webhooks import HttpWebhookSender
from shared.domain.errors import (
    Forbidden,
    GatewayError,
    InvalidRequest,
    TransientError,
    WebhookRejected,
)
from shared.domain.jobs import Job, JobState
from shared.domain.webhooks import parse_webhook_url
from shared.settings import Settings, WebhookSettings
from shared.usecases import completion
from shared.usecases.gateway import Gateway
from shared.usecases.monitor import run_monitor
from tests.support.api import GOOD, checked
from tests.support.gateway import Fakes, fake_gateway, issue_key

ROOT = Path(__file__).resolve().parents[2]
HOOK = "https://hooks.example.com/tts"


@pytest.fixture
def gateway(fakes: Fakes) -> Gateway:
    fakes.clock.now = datetime.now(UTC)
    settings = Settings(bucket="test-bucket", webhooks=WebhookSettings(signing_key="k" * 32))
    return fake_gateway(settings, fakes)


@pytest.fixture
def client(gateway: Gateway) -> FlaskClient:
    from functions.api.app import create_api

    return create_api(gateway).test_client()


def post_job(client: FlaskClient, headers: dict[str, str], webhook: str) -> Any:
    body = {**GOOD, "webhook": webhook, "webhook_events_filter": ["completed"]}
    return checked("POST", "/v1/tts/jobs", client.post("/v1/tts/jobs", json=body, headers=headers))


# -- 1. the URL, fully checked at submit ----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://hooks.example.com:99999/tts", "port"),
        ("https://hooks.example.com:abc/tts", "port"),
        ("https://hooks.example.com:0/tts", "port"),
        ("https://hooks.example.com:+443/tts", "port"),
        ("https://[::1/tts", "malformed"),
        ("https://[::1]x/tts", "between"),
        ("https://::1/tts", "brackets"),
        ("https://[127.0.0.1]/tts", "brackets"),
        ("https://[fe80::1%25eth0]/tts", "zone"),
        ("https://user:secret@hooks.example.com/tts", "password"),
        ("https://hooks.example.com@127.0.0.1/tts", "password"),
        ("https://hooks example.com/tts", "ASCII"),
        ("https://hooks.exämple.com/tts", "ASCII"),
        ("https://hooks_.example.com/tts", "host name"),
        ("https:///tts", "host"),
        # Forms a resolver reads as 127.0.0.1, which the check would not see as an address.
        ("https://2130706433/tts", "dotted-decimal"),
        ("https://127.1/tts", "dotted-decimal"),
        ("https://0x7f.0.0.1/tts", "dotted-decimal"),
        ("https://0177.0.0.1/tts", "dotted-decimal"),
    ],
)
def test_an_invalid_webhook_url_is_a_422_naming_the_field(
    client: FlaskClient, gateway: Gateway, url: str, why: str
) -> None:
    response = post_job(client, issue_key(gateway, "alice"), url)
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert error["code"] == "invalid_request"
    assert why in error["message"]
    assert error["field"] == "webhook"


def test_a_webhook_url_longer_than_the_limit_is_refused() -> None:
    url = "https://hooks.example.com/" + "a" * 2048
    with pytest.raises(InvalidRequest, match="longer than 2048") as caught:
        parse_webhook_url(url, allow_http=False, allow_private=False)
    assert caught.value.field == "webhook"


def test_a_valid_url_is_taken_apart_for_the_request() -> None:
    target = parse_webhook_url(
        "https://Hooks.Example.com:8443/a/b?x=1#frag", allow_http=False, allow_private=False
    )
    assert (target.scheme, target.host, target.port, target.path, target.address) == (
        "https",
        "hooks.example.com",
        8443,
        "/a/b?x=1",
        None,
    )
    v6 = parse_webhook_url("https://[2606:4700::1111]/", allow_http=False, allow_private=False)
    assert (v6.host, v6.port, v6.path, str(v6.address)) == ("2606:4700::1111", 443, "/", v6.host)


# -- 2. the address policy: IPv6 forms judged by the IPv4 address they carry ----------------


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:127.0.0.1",  # mapped
        "::127.0.0.1",  # compatible
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a00:7",  # NAT64 of 10.0.0.7
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254, the metadata server
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:c0a8:114::1",  # 6to4 of 192.168.1.20
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "64:ff9b:1::1",  # NAT64 for local use
        "fec0::1",  # site-local
    ],
)
def test_ipv6_forms_of_private_ipv4_addresses_are_refused(
    client: FlaskClient, gateway: Gateway, address: str
) -> None:
    url = f"https://[{address}]/hook"
    response = post_job(client, issue_key(gateway, "alice"), url)
    assert response.status_code == 422
    assert "not public" in response.json["error"]["message"]
    # Also at send (a job stored before this check), before anything connects.
    with pytest.raises(Forbidden, match="not public"):
        HttpWebhookSender(timeout_s=1.0).send(url, body=b"{}", headers={})


def test_a_name_resolving_to_an_ipv6_form_of_loopback_is_refused_at_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def resolver(host: str, port: object, *args: object, **kwargs: object) -> list[Any]:
        assert host == "hooks.example.com"
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::127.0.0.1", 443, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with pytest.raises(Forbidden, match="non-public"):
        HttpWebhookSender(timeout_s=1.0).send(HOOK, body=b"{}", headers={})


def test_an_ipv6_form_of_a_public_ipv4_address_is_judged_public(
    client: FlaskClient, gateway: Gateway
) -> None:
    for address in ("64:ff9b::808:808", "2002:808:808::1"):
        response = post_job(client, issue_key(gateway, "alice"), f"https://[{address}]/hook")
        assert response.status_code == 202, (address, response.json)


class Failing:
    """A sender whose every call fails with ``error``."""

    def __init__(self, error: GatewayError) -> None:
        self.error = error

    def send(self, url: str, *, body: bytes, headers: Mapping[str, str]) -> None:
        raise self.error


# -- 1. (send) an old job's invalid URL never crashes a run or a monitor pass ----------------

OLD_URLS = ["https://h:99999/", "https://h:abc/", "https://[::1"]


def with_url(url: str) -> Any:
    def write(job: Job) -> Job:
        assert job.webhook is not None
        return job.model_copy(update={"webhook": job.webhook.model_copy(update={"url": url})})

    return write


def real_sender_gateway(gateway: Gateway, fakes: Fakes) -> Gateway:
    return fake_gateway(gateway.settings, fakes, webhooks=HttpWebhookSender(timeout_s=1.0))


@pytest.mark.parametrize("url", OLD_URLS)
def test_an_old_jobs_invalid_url_never_crashes_the_workers_run(
    client: FlaskClient, gateway: Gateway, fakes: Fakes, url: str
) -> None:
    from gpu_worker.bootstrap import bootstrap
    from gpu_worker.runner import Outcome
    from shared.wire.messages import JobMessage
    from tests.support.worker import Instant
    from tests.unit.test_structure import NoModels, StubSubscriberClient

    job_id = post_job(client, issue_key(gateway, "alice"), HOOK).json["id"]
    fakes.jobs.update(job_id, with_url(url))  # as a document written before the check
    gw = real_sender_gateway(gateway, fakes)
    worker = bootstrap(
        gw.settings,
        gateway=gw,
        models=NoModels(),
        subscriber_client=StubSubscriberClient(),  # type: ignore[arg-type]
        executor=Instant(),
    )
    assert worker.runner.run(JobMessage(job_id=job_id)).outcome is Outcome.SUCCEEDED
    job = fakes.jobs.get(job_id)
    assert job is not None
    assert job.state is JobState.SUCCEEDED
    assert job.webhook_due  # left for the monitor


@pytest.mark.parametrize("url", OLD_URLS)
def test_an_old_jobs_invalid_url_never_aborts_a_monitor_pass(
    client: FlaskClient, gateway: Gateway, fakes: Fakes, url: str
) -> None:
    alice = issue_key(gateway, "alice")
    bad = post_job(client, alice, HOOK).json["id"]
    fakes.jobs.update(bad, with_url(url))
    good = post_job(client, alice, HOOK).json["id"]
    down = fake_gateway(gateway.settings, fakes, webhooks=Failing(TransientError("down")))
    for job_id in (bad, good):  # ends; its "completed" fails once and is due again
        completion.cancel(down, job_id, reason="test")
    gw = real_sender_gateway(gateway, fakes)
    fakes.jobs.update(good, with_url("https://[64:ff9b::7f00:1]/"))  # refused, no connection
    fakes.clock.advance(60)
    report = run_monitor(gw)  # raises nothing
    assert sorted(report.called_back) == sorted([bad, good])
    views = {
        job_id: client.get(f"/v1/jobs/{job_id}", headers=alice).json["webhook_deliveries"]
        for job_id in (bad, good)
    }
    assert views[bad][0]["last_error"] == "invalid webhook URL"
    assert views[good][0]["last_error"] == "address not allowed"


# -- 5. callers see a generic reason; the precise one is only logged -------------------------


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (WebhookRejected("webhook answered HTTP 404"), "receiver answered an error"),
        (TransientError("webhook not reached: ConnectTimeout"), "delivery failed"),
        (
            TransientError("webhook not reached: ConnectionRefusedError: [Errno 111]"),
            "delivery failed",
        ),
        (
            Forbidden("the webhook host resolves to a non-public address 10.0.0.7"),
            "address not allowed",
        ),
    ],
)
def test_last_error_is_generic_and_the_log_has_the_reason(
    client: FlaskClient,
    gateway: Gateway,
    fakes: Fakes,
    error: GatewayError,
    shown: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from functions.api.app import create_api

    gw = fake_gateway(gateway.settings, fakes, webhooks=Failing(error))
    api = create_api(gw).test_client()
    alice = issue_key(gw, "alice")
    job_id = post_job(api, alice, HOOK).json["id"]
    api.post(f"/v1/jobs/{job_id}/cancel", headers=alice)  # the completed delivery is tried
    [delivery] = api.get(f"/v1/jobs/{job_id}", headers=alice).json["webhook_deliveries"]
    assert delivery["last_error"] == shown
    logged = [r for r in caplog.records if r.getMessage() == "webhook not delivered"]
    assert [r.__dict__["error"] for r in logged] == [error.message]


# -- 6. the GPU worker never calls out --------------------------------------------------------


def test_a_worker_built_gateway_never_sends_a_webhook(
    client: FlaskClient, gateway: Gateway, fakes: Fakes
) -> None:
    from gpu_worker.bootstrap import bootstrap
    from shared.wire.messages import JobMessage
    from tests.support.worker import Instant
    from tests.unit.test_structure import NoModels, StubSubscriberClient

    alice = issue_key(gateway, "alice")
    ok = checked(
        "POST",
        "/v1/tts/jobs",
        client.post("/v1/tts/jobs", json={**GOOD, "webhook": HOOK}, headers=alice),
    ).json["id"]

    class Fails:
        def execute(self, task: object) -> object:
            from shared.domain.errors import SynthesisFailed

            raise SynthesisFailed("scripted")

    worker = bootstrap(
        gateway.settings,
        gateway=gateway,  # one that has a sender: the worker drops it
        models=NoModels(),
        subscriber_client=StubSubscriberClient(),  # type: ignore[arg-type]
        executor=Instant(),
    )
    worker.runner.run(JobMessage(job_id=ok))
    failing = bootstrap(
        gateway.settings,
        gateway=gateway,
        models=NoModels(),
        subscriber_client=StubSubscriberClient(),  # type: ignore[arg-type]
        executor=Fails(),  # type: ignore[arg-type]
    )
    bad = checked(
        "POST",
        "/v1/tts/jobs",
        client.post("/v1/tts/jobs", json={**GOOD, "webhook": HOOK}, headers=alice),
    ).json["id"]
    failing.runner.run(JobMessage(job_id=bad))
    assert fakes.webhooks.calls == []  # neither start nor completed, from either run
    assert worker.gateway.webhooks is None
    assert failing.gateway.webhooks is None
    for job_id in (ok, bad):
        job = fakes.jobs.get(job_id)
        assert job is not None
        assert job.webhook_due
        assert job.webhook_due_at is not None
    # The monitor, in the control plane, sends what the worker left due.
    assert sorted(run_monitor(gateway).called_back) == sorted([ok, bad])
    sent = sorted(
        (json.loads(body)["data"]["id"], json.loads(body)["type"])
        for _, body, _ in fakes.webhooks.calls
    )
    assert sent == sorted(
        (job_id, kind) for job_id in (ok, bad) for kind in ("job.start", "job.completed")
    )


def test_no_worker_module_can_reach_the_webhook_sender() -> None:
    """Neither the 4090's runner nor the RunPod handler imports the delivery code."""
    banned = {"shared.usecases.webhooks", "shared.adapters.webhooks"}
    for path in (ROOT / "gpu_worker").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            else:
                continue
            assert not names & banned, f"{path.relative_to(ROOT)} imports {names & banned}"


# -- 7. the local stack: webhooks on, loopback allowed there only ---------------------------


def test_the_local_stack_turns_webhooks_on_and_allows_loopback_receivers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fakes: Fakes
) -> None:
    from functions.api.app import create_api
    from infra.devstack import DevStack

    names = ("TTS_WEBHOOKS__SIGNING_KEY", "TTS_WEBHOOKS__ALLOW_PRIVATE", "TTS_WEBHOOKS__ALLOW_HTTP")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    production = Settings(webhooks=WebhookSettings(signing_key="k" * 32))
    env = DevStack(models=(), run_dir=tmp_path).env
    for name in names:
        monkeypatch.setenv(name, env[name])
    local = Settings()
    assert local.webhooks.signing_key.get_secret_value()
    assert (local.webhooks.allow_private, local.webhooks.allow_http) == (True, True)
    assert (production.webhooks.allow_private, production.webhooks.allow_http) == (False, False)
    # The README's example: a receiver on 127.0.0.1 over http is taken there, and only there.
    url = "http://127.0.0.1:9000/hook"
    for settings, status in ((local, 202), (production, 422)):
        gw = fake_gateway(settings.model_copy(update={"bucket": "test-bucket"}), fakes)
        response = post_job(create_api(gw).test_client(), issue_key(gw, "alice"), url)
        assert response.status_code == status, response.json
