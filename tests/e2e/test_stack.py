"""The whole local stack as `make run` starts it: emulators, the API under functions-framework
in its own process, the 4090 worker in its own process, the tiny model. One synthesis over HTTP.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import time
import zipfile
from typing import Any

import numpy as np
import pytest
import requests
import soundfile as sf

from infra import topology
from infra.devstack import DevStack
from shared.adapters.clients import storage_client
from shared.settings import Settings
from tests.support.contracts import validate_response

pytestmark = pytest.mark.e2e


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

    view = finished(stack, job_id)
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


def finished(stack: DevStack, job_id: str, *, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        view: dict[str, Any] = call(stack, "GET", f"/v1/jobs/{job_id}").json()
        if view["state"] in {"succeeded", "failed"} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert view["state"] == "succeeded", view
    return view


def wav(seconds: float = 2.0) -> bytes:
    t = np.arange(int(24000 * seconds), dtype=np.float32) / 24000
    buffer = io.BytesIO()
    sf.write(buffer, 0.2 * np.sin(2 * np.pi * 160 * t), 24000, format="WAV")
    return buffer.getvalue()


def test_voice_design_and_voice_clone_over_http(stack: DevStack) -> None:
    design = {"mode": "voice_design", "text": "Ahoy.", "instruct": "an old sailor", "seed": 4}
    clone = {
        "mode": "voice_clone",
        "text": "Hello.",
        "ref_audio": base64.b64encode(wav()).decode(),
        "ref_text": "A reference line.",
    }
    for body in (design, clone):
        job_id = call(stack, "POST", "/v1/tts/jobs", json=body).json()["id"]
        assert finished(stack, job_id)["audio"]["duration_s"] > 0


def test_create_a_voice_drop_its_prompt_in_the_bucket_and_speak_with_both(
    stack: DevStack,
) -> None:
    """create voice -> worker -> registry; then `gsutil cp` of its .pt -> finalize event ->
    registry -> clone-prompt synthesis with the dropped voice."""
    created = call(
        stack,
        "POST",
        "/v1/voices",
        data={"name": "Keeper", "ref_text": "A reference line.", "tags": "e2e"},
        files={"ref_audio": ("ref.wav", wav(), "audio/wav")},
    )
    assert created.status_code == 202
    voice_id = finished(stack, created.json()["id"])["voice_id"]
    voice = call(stack, "GET", f"/v1/voices/{voice_id}").json()
    assert (voice["name"], voice["tags"]) == ("Keeper", ["e2e"])

    package = call(stack, "GET", f"/v1/voices/{voice_id}/package")
    assert package.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(package.content)) as archive:
        prompt = archive.read("prompt.pt")
    # The stack's own settings, as its processes read them from their environment.
    settings = Settings(
        bucket=stack.bucket,
        storage_emulator_host=stack.emulators.env["STORAGE_EMULATOR_HOST"],
    )
    # Into the voice files' own bucket, the one storage triggers watch (as deployed).
    blob = storage_client(settings).bucket(stack.voices_bucket).blob("voice-prompts/by-hand.pt")
    blob.metadata = {"name": "Dropped"}
    blob.upload_from_string(prompt)

    deadline = time.monotonic() + 30
    while True:
        listed = call(stack, "GET", "/v1/voices", params={"q": "dropped"}).json()["voices"]
        if listed or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert [v["name"] for v in listed] == ["Dropped"]

    for voice_ref in ("Keeper", "Dropped"):
        body = {"mode": "clone_prompt", "text": "Speak.", "voice": voice_ref}
        job_id = call(stack, "POST", "/v1/tts/jobs", json=body).json()["id"]
        finished(stack, job_id)


def test_casting_and_normalizing_over_http(stack: DevStack) -> None:
    cast = {
        "character": "Mira",
        "base_description": "A young woman with a clear alto voice",
        "text": "I never thought I would see this place again.",
        "items": [{"emotion": "happy"}, {"emotion": "sad", "intensity": "high"}],
        "seed": 11,
    }
    parent = call(stack, "POST", "/v1/voices/cast", json=cast)
    assert parent.status_code == 202
    view = finished(stack, parent.json()["id"])
    assert view["progress"]["succeeded"] == view["progress"]["total"] == 2
    for child_id in view["progress"]["children"]:
        child = call(stack, "GET", f"/v1/jobs/{child_id}").json()
        voice = call(stack, "GET", child["voice_url"]).json()
        assert voice["character"] == "Mira"

    clip = {"audio": base64.b64encode(wav(3.0)).decode(), "target_lufs": -20}
    job_id = call(stack, "POST", "/v1/audio/normalize", json=clip).json()["id"]
    assert finished(stack, job_id)["audio"]["duration_s"] == pytest.approx(3.0, abs=0.01)


def test_health_is_public_and_everything_else_is_not(stack: DevStack) -> None:
    assert requests.get(f"{stack.base_url}/healthz", timeout=10).json() == {"status": "ok"}
    anonymous = requests.get(f"{stack.base_url}/v1/jobs/abc", timeout=10)
    assert anonymous.status_code == 401


def test_bad_input_over_http_is_a_clear_4xx(stack: DevStack) -> None:
    response = call(stack, "POST", "/v1/tts/jobs", json={"text": "Hi", "speaker": "Nobody"})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "speaker"


def test_a_running_job_canceled_over_http_stops_in_the_worker_process(stack: DevStack) -> None:
    """The real worker process stops between pieces and keeps no result."""
    text = " ".join(f"This is sentence number {i} of a long chapter." for i in range(60))
    job_id = call(
        stack, "POST", "/v1/tts/jobs", json={"text": text, "speaker": "Ryan", "seed": 4}
    ).json()["id"]
    deadline = time.monotonic() + 60
    while call(stack, "GET", f"/v1/jobs/{job_id}").json()["state"] != "running":
        assert time.monotonic() < deadline, "the job was never picked up"
        time.sleep(0.05)
    canceled = call(stack, "POST", f"/v1/jobs/{job_id}/cancel")
    assert canceled.status_code == 200
    assert canceled.json()["state"] == "canceled"
    worker = stack.process("worker")
    deadline = time.monotonic() + 120
    stopped = f'"job_id": "{job_id}", "reason": "job {job_id} was canceled after'
    while stopped not in worker.log_path.read_text():
        assert time.monotonic() < deadline, "the worker never stopped the canceled job"
        time.sleep(0.2)
    view = call(stack, "GET", f"/v1/jobs/{job_id}").json()
    assert (view["state"], view["audio"]) == ("canceled", None)
    assert call(stack, "GET", f"/v1/jobs/{job_id}/audio").status_code == 409


@pytest.mark.stops_shared_stack
def test_the_monitor_runs_on_the_cloud_s_schedule_and_stops_with_sigterm(
    stack: DevStack,
) -> None:
    declared = topology.load()
    function = next(f for f in declared.functions if f.module == "functions.monitor")
    monitor = stack.process("monitor")
    assert monitor.alive
    logged = monitor.log_path.read_text().splitlines()
    lines = [json.loads(line) for line in logged if line.startswith("{")]
    (ready,) = [line for line in lines if line.get("message") == "monitor ready"]
    assert ready["every_s"] == declared.schedule_of(function).every_s
    assert monitor.last_error() is None  # its first pass, made at start, went through
    monitor.process.send_signal(signal.SIGTERM)
    assert monitor.process.wait(timeout=10) == 0


@pytest.mark.stops_shared_stack
def test_sigterm_lets_the_worker_finish_the_job_in_hand(stack: DevStack) -> None:
    """It stops the stack's worker for good: it runs after every other test on the stack."""
    job_id = call(
        stack, "POST", "/v1/tts/jobs", json={"text": "One last line.", "speaker": "Aiden"}
    ).json()["id"]
    worker = stack.process("worker")
    deadline = time.monotonic() + 60
    while call(stack, "GET", f"/v1/jobs/{job_id}").json()["state"] == "queued":
        assert time.monotonic() < deadline, "the job was never picked up"
        time.sleep(0.05)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=60) == 0
    assert call(stack, "GET", f"/v1/jobs/{job_id}").json()["state"] == "succeeded"
    assert '"subscriber stopped"' in worker.log_path.read_text()
