"""`make run RUNPOD=1` as a whole: with the 4090 stopped, a job submitted over HTTP is routed
to RunPod, dispatched through the filtered push subscription, run by the one handler on the
tiny models, and finished by the webhook. Everything in its own process."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest
import requests

from infra.devstack import DevStack
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tiny_models_dir: dict[str, str]) -> Iterator[DevStack]:
    env = {"TTS_WORKER__HEARTBEAT_S": "1"}
    models = (tiny_models_dir["custom_voice"],)
    with DevStack(models=models, extra_env=env, runpod=True) as running:
        yield running


def test_with_the_4090_stopped_jobs_run_on_runpod(stack: DevStack) -> None:
    worker = stack.process("worker")
    worker.process.send_signal(signal.SIGTERM)  # the 4090 reports offline as it goes
    assert worker.process.wait(timeout=60) == 0
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    submitted = requests.post(
        f"{stack.base_url}/v1/tts/jobs",
        json={"text": "Hello from the cloud.", "speaker": "Serena", "seed": 2},
        headers=headers,
        timeout=30,
    )
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]

    def finished() -> dict[str, object] | None:
        view = requests.get(f"{stack.base_url}/v1/jobs/{job_id}", headers=headers, timeout=10)
        body: dict[str, object] = view.json()
        return body if body["state"] in {"succeeded", "failed"} else None

    view = eventually(finished, timeout_s=180, interval_s=0.3, message=f"{job_id} never ended")
    assert view["state"] == "succeeded", view
    audio = requests.get(f"{stack.base_url}/v1/jobs/{job_id}/audio", headers=headers, timeout=30)
    assert audio.status_code == 200
    assert audio.content[:4] == b"RIFF"
    dispatcher_log = stack.process("runpod-dispatch").log_path.read_text()
    assert job_id in dispatcher_log
    # RunPod's webhook for this job finished it (not the monitor's polling, which takes over
    # when no webhook gets through).
    assert stack.local_runpod is not None
    sent = [
        webhook["status"]
        for webhook in stack.local_runpod.webhooks_sent
        if isinstance(webhook.get("output"), dict) and webhook["output"].get("job_id") == job_id
    ]
    assert sent == ["COMPLETED"]

    def handled() -> list[object]:
        outcomes = []
        for line in stack.process("runpod-webhook").log_path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the server's own lines, or one still being written
            if entry.get("message") == "webhook handled" and entry.get("job_id") == job_id:
                outcomes.append(entry["outcome"])
        return outcomes

    # The log line follows the document's update.
    assert eventually(handled, timeout_s=30, message="the webhook never finished it") == [
        "succeeded"
    ]
