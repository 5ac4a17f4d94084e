"""RunPodClient against a local cloud-compatible endpoint driving the real runpod SDK.

The endpoint (``infra.runpod_local``) runs ``tests/support/echo_handler.py`` under the SDK's own
test server, so a job really goes through ``runpod.serverless`` and back. Backoff sleeps are
recorded, never slept. A few retry rules are pinned with a scripted session, where a real server
cannot produce the fault (a 2xx with a broken body).
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.structures import CaseInsensitiveDict
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from infra.processes import free_port
from infra.runpod_local import LocalRunPod
from shared.adapters.runpod_api import RunPodClient
from shared.domain.errors import BackendUnavailable, RunPodJobGone, RunPodRejected
from shared.wire.runpod_status import EndpointHealth, RunPodStatus
from tests.support.waiting import eventually

ECHO_HANDLER = Path(__file__).resolve().parents[1] / "support" / "echo_handler.py"
POLL_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRunPod]:
    with LocalRunPod(
        handler=[sys.executable, str(ECHO_HANDLER)],
        log_dir=tmp_path_factory.mktemp("runpod-local"),
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_leftover_faults(local: LocalRunPod) -> Iterator[None]:
    local.reset_faults()
    yield
    local.reset_faults()


@dataclass
class Receiver:
    """A webhook receiver on loopback; answers 500 to the first ``fail_first`` deliveries."""

    url: str = ""
    fail_first: int = 0
    received: queue.Queue[tuple[dict[str, str], Any]] = field(default_factory=queue.Queue)

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        req = Request(environ)
        self.received.put((dict(req.headers), req.get_json(silent=True)))
        status = 200
        if self.fail_first > 0:
            self.fail_first -= 1
            status = 500
        return Response("{}", status=status, mimetype="application/json")(environ, start_response)

    def wait_for(self, job_id: str) -> tuple[dict[str, str], Any]:
        deadline = time.monotonic() + POLL_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                headers, body = self.received.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            if isinstance(body, dict) and body.get("id") == job_id:
                return headers, body
        raise AssertionError(f"no webhook for {job_id}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    recv = Receiver()
    server: BaseWSGIServer = make_server("127.0.0.1", 0, recv.wsgi, threaded=True)
    recv.url = f"http://127.0.0.1:{server.server_port}/hook"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield recv
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(local: LocalRunPod, sleeps: list[float]) -> RunPodClient:
    return RunPodClient(
        base_url=local.base_url,
        endpoint_id=local.endpoint_id,
        api_key=local.api_key,
        sleep=sleeps.append,
    )


def submit(client: RunPodClient, payload: dict[str, object], *, webhook: str | None = None) -> str:
    return client.run(payload=payload, webhook=webhook, execution_timeout_s=60, ttl_s=600)


def wait_finished(client: RunPodClient, runpod_id: str) -> RunPodStatus:
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while time.monotonic() < deadline:
        status = client.status(runpod_id)
        if status.finished:
            return status
        assert status.status in {"IN_QUEUE", "IN_PROGRESS"}
        time.sleep(0.05)
    raise AssertionError(f"{runpod_id} did not finish")


# ------------------------------------------------------------------ jobs through the SDK


def test_job_runs_and_status_reports_the_output(client: RunPodClient) -> None:
    runpod_id = submit(client, {"text": "hello", "n": 3})

    status = wait_finished(client, runpod_id)

    assert status.succeeded
    assert status == RunPodStatus(
        id=runpod_id, status="COMPLETED", output={"echo": {"text": "hello", "n": 3}}, error=None
    )


def test_failing_job_reports_failed_with_the_handlers_error(client: RunPodClient) -> None:
    status = wait_finished(client, submit(client, {"fail": True}))

    assert status.finished
    assert not status.succeeded
    assert (status.status, status.error, status.output) == ("FAILED", "asked to fail", None)


def test_webhook_arrives_in_cloud_shape_with_extra_headers(
    client: RunPodClient, local: LocalRunPod, receiver: Receiver
) -> None:
    local.webhook_headers = {"X-Webhook-Secret": "not-the-secret"}
    runpod_id = submit(client, {"text": "hook"}, webhook=receiver.url)

    headers, body = receiver.wait_for(runpod_id)

    assert headers["X-Webhook-Secret"] == "not-the-secret"
    parsed = RunPodStatus.parse(body)
    assert (parsed.id, parsed.status, parsed.output) == (
        runpod_id,
        "COMPLETED",
        {"echo": {"text": "hook"}},
    )
    as_polled = requests.get(
        f"{local.base_url}/{local.endpoint_id}/status/{runpod_id}",
        headers={"Authorization": f"Bearer {local.api_key}"},
        timeout=5,
    ).json()
    assert body == as_polled  # the cloud posts exactly what /status answers
    assert body in local.webhooks_sent


def test_failed_job_webhook_carries_the_error(client: RunPodClient, receiver: Receiver) -> None:
    runpod_id = submit(client, {"fail": True}, webhook=receiver.url)

    _, body = receiver.wait_for(runpod_id)

    assert (body["status"], body["error"]) == ("FAILED", "asked to fail")
    assert "output" not in body


def test_webhook_is_retried_after_a_failed_delivery(
    client: RunPodClient, receiver: Receiver
) -> None:
    receiver.fail_first = 1
    runpod_id = submit(client, {"text": "again"}, webhook=receiver.url)

    first = receiver.wait_for(runpod_id)
    second = receiver.wait_for(runpod_id)

    assert first[1] == second[1]


def test_dropped_webhooks_still_run_the_job(
    client: RunPodClient, local: LocalRunPod, receiver: Receiver
) -> None:
    local.drop_webhooks = True
    dropped = submit(client, {"text": "silent"}, webhook=receiver.url)
    assert wait_finished(client, dropped).succeeded
    local.drop_webhooks = False
    # The worker is sequential: by the time this one's webhook arrives, the dropped one's
    # would have been sent.
    delivered = submit(client, {"text": "loud"}, webhook=receiver.url)
    receiver.wait_for(delivered)

    assert all(sent["id"] != dropped for sent in local.webhooks_sent)


def test_health_counts_the_busy_worker_and_the_jobs_waiting_for_it(
    client: RunPodClient, tmp_path: Path
) -> None:
    gate = tmp_path / "open"
    held = submit(client, {"gate": str(gate)})
    waiting = [submit(client, {"text": f"after {n}"}) for n in (1, 2)]
    try:
        # Once the one worker holds the gated job, the other two can only wait in the queue.
        eventually(
            lambda: client.status(held).status == "IN_PROGRESS",
            timeout_s=POLL_TIMEOUT_S,
            message=f"{held} never started",
        )
        assert client.health() == EndpointHealth(
            workers_idle=0, workers_running=1, jobs_in_queue=2, jobs_in_progress=1
        )
    finally:
        gate.touch()
    for runpod_id in (held, *waiting):
        assert wait_finished(client, runpod_id).succeeded
    assert client.health() == EndpointHealth(
        workers_idle=1, workers_running=0, jobs_in_queue=0, jobs_in_progress=0
    )


def test_unknown_job_and_cancel(client: RunPodClient) -> None:
    # A 404 about a job (RunPod purged it) is its own error, which the monitor acts on.
    with pytest.raises(RunPodJobGone) as info:
        client.status("no-such-job")
    assert info.value.details["status"] == 404

    runpod_id = submit(client, {"text": "done"})
    wait_finished(client, runpod_id)
    client.cancel(runpod_id)  # a finished job stays as it was
    assert client.status(runpod_id).succeeded


# ------------------------------------------------------------------ retry policy, for real


def test_429_is_retried_with_backoff_until_it_succeeds(
    client: RunPodClient, local: LocalRunPod, sleeps: list[float]
) -> None:
    local.fail_next_runs(429, 2)
    before = local.runs_received

    runpod_id = submit(client, {"text": "third time"})

    assert local.runs_received - before == 3
    assert sleeps == [0.5, 1.0]
    assert wait_finished(client, runpod_id).output == {"echo": {"text": "third time"}}


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), ("120", 30.0), ("soon", 0.5)])
def test_numeric_retry_after_is_honoured_and_capped(
    client: RunPodClient, local: LocalRunPod, sleeps: list[float], header: str, expected: float
) -> None:
    local.fail_next_runs(429, 1, retry_after=header)

    submit(client, {"text": "later"})

    assert sleeps == [expected]


def test_persistent_503_becomes_backend_unavailable(
    client: RunPodClient, local: LocalRunPod, sleeps: list[float]
) -> None:
    local.fail_next_runs(503, 10)
    before = local.runs_received

    with pytest.raises(BackendUnavailable) as info:
        submit(client, {"text": "never"})

    assert info.value.retryable
    assert info.value.details["status"] == 503
    assert info.value.details["attempts"] == 4
    assert "503" in info.value.message
    assert local.runs_received - before == 4
    assert sleeps == [0.5, 1.0, 2.0]


def test_400_is_rejected_without_retry(
    client: RunPodClient, local: LocalRunPod, sleeps: list[float]
) -> None:
    local.fail_next_runs(400, 1)
    before = local.runs_received

    with pytest.raises(RunPodRejected) as info:
        submit(client, {"text": "bad"})

    assert not info.value.retryable
    assert info.value.details["status"] == 400
    assert "injected HTTP 400" in info.value.message
    assert local.runs_received - before == 1
    assert sleeps == []


def test_a_hanging_run_times_out_into_backend_unavailable(
    local: LocalRunPod, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short, so the hung requests finish (and queue their job) before the module ends.
    monkeypatch.setattr(local, "hang_s", 2.0)
    local.hang_runs = True
    impatient = RunPodClient(
        base_url=local.base_url,
        endpoint_id=local.endpoint_id,
        api_key=local.api_key,
        timeout_s=0.5,
        attempts=2,
        sleep=sleeps.append,
    )

    with pytest.raises(BackendUnavailable) as info:
        submit(impatient, {"text": "slow"})

    assert info.value.details == {"status": None, "attempts": 2, "operation": "run"}
    assert "Timeout" in info.value.message
    assert sleeps == [0.5]


def test_wrong_api_key_is_rejected(local: LocalRunPod, sleeps: list[float]) -> None:
    wrong = RunPodClient(
        base_url=local.base_url,
        endpoint_id=local.endpoint_id,
        api_key="sk-wrong-key-123",
        sleep=sleeps.append,
    )

    with pytest.raises(RunPodRejected) as info:
        wrong.health()

    assert info.value.details["status"] == 401
    assert "sk-wrong-key-123" not in str(info.value)
    assert sleeps == []


def test_nothing_listening_is_a_transient_network_error(sleeps: list[float]) -> None:
    nowhere = RunPodClient(
        base_url=f"http://127.0.0.1:{free_port()}",
        endpoint_id="e",
        api_key="k",
        attempts=2,
        sleep=sleeps.append,
    )

    with pytest.raises(BackendUnavailable) as info:
        nowhere.health()

    assert "ConnectionError" in info.value.message
    assert info.value.details["status"] is None
    assert isinstance(info.value.__cause__, requests.ConnectionError)


# ------------------------------------------------------------------ parsing and scripted faults


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "COMPLETED",
        {"status": "COMPLETED"},
        {"id": "", "status": "COMPLETED"},
        {"id": 7, "status": "COMPLETED"},
        {"id": "j"},
        {"id": "j", "status": "DONE"},
        {"id": "j", "status": 3},
    ],
)
def test_status_parse_rejects_malformed_payloads(payload: object) -> None:
    with pytest.raises(RunPodRejected):
        RunPodStatus.parse(payload)


def test_status_parse_keeps_structured_errors_readable() -> None:
    status = RunPodStatus.parse({"id": "j", "status": "TIMED_OUT", "error": {"why": "slow"}})

    assert status.finished
    assert not status.succeeded
    assert json.loads(status.error or "") == {"why": "slow"}


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"jobs": {}},
        {"jobs": {}, "workers": {"idle": "1"}},
        {"jobs": {"inQueue": -1}, "workers": {}},
    ],
)
def test_health_parse_rejects_malformed_payloads(payload: object) -> None:
    with pytest.raises(RunPodRejected):
        EndpointHealth.parse(payload)


class ScriptedSession(requests.Session):
    """Answers from a script and records what was asked; an exception in the script is raised."""

    def __init__(self, *script: requests.Response | Exception) -> None:
        super().__init__()
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.calls.append({"method": method, "url": url, **kwargs})
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def response(status: int, body: bytes | str) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = body.encode() if isinstance(body, str) else body
    resp.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
    return resp


def scripted_client(session: ScriptedSession, sleeps: list[float]) -> RunPodClient:
    return RunPodClient(
        base_url="http://runpod.invalid/v2/",
        endpoint_id="ep",
        api_key="sk-secret-key",
        session=session,
        sleep=sleeps.append,
    )


def test_run_sends_the_cloud_request_shape(sleeps: list[float]) -> None:
    session = ScriptedSession(response(200, '{"id": "rp-1", "status": "IN_QUEUE"}'))

    runpod_id = scripted_client(session, sleeps).run(
        payload={"job_id": "j1"}, webhook=None, execution_timeout_s=300, ttl_s=3600
    )

    assert runpod_id == "rp-1"
    (call,) = session.calls
    assert (call["method"], call["url"]) == ("POST", "http://runpod.invalid/v2/ep/run")
    assert call["headers"]["Authorization"] == "Bearer sk-secret-key"
    assert call["json"] == {
        "input": {"job_id": "j1"},
        "policy": {"executionTimeout": 300_000, "ttl": 3_600_000},
    }


def test_invalid_json_in_a_2xx_is_rejected(sleeps: list[float]) -> None:
    session = ScriptedSession(response(200, "<html>gateway</html>"))

    with pytest.raises(RunPodRejected, match="invalid JSON"):
        scripted_client(session, sleeps).status("rp-1")


def test_network_errors_are_retried_and_the_key_is_never_logged(
    sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    session = ScriptedSession(
        requests.ConnectionError("refused"),
        requests.ReadTimeout("slow"),
        response(502, "bad gateway"),
        response(200, '{"id": "rp-1", "status": "IN_PROGRESS"}'),
    )

    with caplog.at_level(logging.DEBUG):
        status = scripted_client(session, sleeps).status("rp-1")

    assert status.status == "IN_PROGRESS"
    assert sleeps == [0.5, 1.0, 2.0]
    assert "sk-secret-key" not in caplog.text
    assert "sk-secret-key" not in repr(scripted_client(session, sleeps))


def test_rejection_text_is_trimmed(sleeps: list[float]) -> None:
    session = ScriptedSession(response(422, json.dumps({"error": "x" * 2000})))

    with pytest.raises(RunPodRejected) as info:
        scripted_client(session, sleeps).cancel("rp-1")

    assert len(str(info.value.details["error"])) == 500
    assert info.value.details["status"] == 422


class SlowSession(ScriptedSession):
    """Each request takes ``took_s`` on ``clock`` (a timeout, say) before its scripted answer."""

    def __init__(self, clock: list[float], took_s: float, *script: requests.Response) -> None:
        super().__init__(*script)
        self.clock = clock
        self.took_s = took_s

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.clock[0] += min(self.took_s, kwargs["timeout"])
        return super().request(method, url, **kwargs)


def test_retries_stay_within_the_call_budget() -> None:
    """Back-off and Retry-After never carry a call past its budget (the push's ack deadline)."""
    now = [0.0]
    busy = response(503, "{}")
    busy.headers["Retry-After"] = "25"
    session = SlowSession(now, 10.0, busy, busy, busy, busy)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    client = RunPodClient(
        base_url="http://runpod.invalid/v2/",
        endpoint_id="ep",
        api_key="k",
        timeout_s=10.0,
        attempts=4,
        budget_s=40.0,
        session=session,
        sleep=sleep,
        clock=lambda: now[0],
    )

    with pytest.raises(BackendUnavailable) as info:
        client.health()

    # 10 s, 25 s back-off, then a request cut to the 5 s left; no third try.
    assert info.value.details["attempts"] == 2
    assert [call["timeout"] for call in session.calls] == [10.0, 5.0]
    assert now[0] <= 40.0
