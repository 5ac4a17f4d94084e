"""The whole local stack as `make run` starts it: emulators, the API under functions-framework
in its own process, the 4090 worker in its own process, the tiny model. One synthesis over HTTP.
"""

from __future__ import annotations

import io
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import soundfile as sf

from infra.devstack import DevStack
from tests.support.contracts import validate_response

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tiny_model_dir: str) -> Iterator[DevStack]:
    with DevStack(models=(tiny_model_dir,), extra_env={"TTS_WORKER__HEARTBEAT_S": "1"}) as running:
        yield running


def call(stack: DevStack, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {stack.api_key}", **kwargs.pop("headers", {})}
    response = requests.request(
        method, stack.base_url + path, headers=headers, timeout=30, allow_redirects=False, **kwargs
    )
    body = response.json() if response.headers.get("Content-Type") == "application/json" else None
    validate_response(method, path, response.status_code, body)
    return response


def test_a_custom_voice_request_comes_back_as_a_valid_wav(stack: DevStack) -> None:
    submitted = call(
        stack,
        "POST",
        "/v1/tts/jobs",
        json={"text": "Chapter one. It was a dark night.", "speaker": "Vivian", "language": "en"},
    )
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]

    deadline = time.monotonic() + 90
    while True:
        view = call(stack, "GET", f"/v1/jobs/{job_id}").json()
        if view["state"] in {"succeeded", "failed"} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert view["state"] == "succeeded", view
    assert view["attempts"] == 1

    redirect = call(stack, "GET", f"/v1/jobs/{job_id}/audio")
    assert redirect.status_code == 302
    audio = requests.get(redirect.headers["Location"], timeout=30)
    assert audio.status_code == 200
    samples, rate = sf.read(io.BytesIO(audio.content))
    assert rate == view["audio"]["sample_rate"] == 24000
    assert len(samples) > 0
    assert view["audio"]["duration_s"] == pytest.approx(len(samples) / rate, abs=1e-6)
    assert view["audio"]["bytes"] == len(audio.content)


def test_health_is_public_and_everything_else_is_not(stack: DevStack) -> None:
    assert requests.get(f"{stack.base_url}/healthz", timeout=10).json() == {"status": "ok"}
    anonymous = requests.get(f"{stack.base_url}/v1/jobs/abc", timeout=10)
    assert anonymous.status_code == 401


def test_bad_input_over_http_is_a_clear_4xx(stack: DevStack) -> None:
    response = call(stack, "POST", "/v1/tts/jobs", json={"text": "Hi", "speaker": "Nobody"})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "speaker"


def test_sigterm_lets_the_worker_finish_the_job_in_hand(stack: DevStack) -> None:
    """Runs last in this module: it stops the stack's worker for good."""
    job_id = call(
        stack, "POST", "/v1/tts/jobs", json={"text": "One last line.", "speaker": "Aiden"}
    ).json()["id"]
    worker = stack.process("worker")
    deadline = time.monotonic() + 60
    while call(stack, "GET", f"/v1/jobs/{job_id}").json()["state"] == "queued":
        assert time.monotonic() < deadline, "the job was never picked up"
        time.sleep(0.005)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=60) == 0
    assert call(stack, "GET", f"/v1/jobs/{job_id}").json()["state"] == "succeeded"
    assert '"subscriber stopped"' in worker.log_path.read_text()
