"""Kill the 4090 worker process in the middle of a job: the job finishes exactly once, on the
lease-expiry path (the monitor requeues it, the next worker claims and finishes it)."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from infra.devstack import DevStack
from shared.bootstrap import build_gateway
from shared.domain.jobs import Job, JobState
from shared.settings import Settings
from shared.usecases.gateway import Gateway
from shared.usecases.monitor import run_monitor
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

LEASE_S = 3


@pytest.fixture(scope="module")
def stack(tiny_models_dir: dict[str, str]) -> Iterator[DevStack]:
    env = {
        "TTS_WORKER__LEASE_S": str(LEASE_S),
        "TTS_WORKER__HEARTBEAT_S": "1",
        # Many short chunks: a long job whose middle is easy to hit.
        "TTS_WORKER__MAX_CHUNK_CHARS": "20",
    }
    # No monitor of the stack's own: the test runs the pass that must find the expired lease.
    models = (tiny_models_dir["custom_voice"],)
    with DevStack(models=models, extra_env=env, monitor_every_s=None) as running:
        yield running


@pytest.fixture
def gw(stack: DevStack, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    for name, value in stack.emulators.env.items():
        monkeypatch.setenv(name, value)
    return build_gateway(Settings(bucket=stack.bucket))


def test_a_killed_worker_s_job_finishes_once_after_its_lease_expires(
    stack: DevStack, gw: Gateway
) -> None:
    import requests

    # 24 chunks (MAX_CHUNK_CHARS), six batches: seconds of work, while the kill comes within
    # a poll or two of the claim; the second worker does them all again.
    text = " ".join(f"This is sentence number {i} of the chapter." for i in range(8))
    response = requests.post(
        f"{stack.base_url}/v1/tts/jobs",
        json={"text": text, "speaker": "Dylan", "seed": 9},
        headers={"Authorization": f"Bearer {stack.api_key}"},
        timeout=30,
    )
    job_id = response.json()["id"]
    first = stack.process("worker")

    def running() -> bool:
        job = gw.jobs.get(job_id)
        return job is not None and job.state is JobState.RUNNING

    eventually(running, timeout_s=120, interval_s=0.05, message="the job was never picked up")
    first.process.send_signal(signal.SIGKILL)  # no goodbye: the lease is all that is left
    first.process.wait(timeout=10)
    killed = gw.jobs.get(job_id)
    assert killed is not None
    assert killed.state is JobState.RUNNING  # it died mid-job

    # Monitor passes until one finds the lease run out (LEASE_S after the last extension).
    expired = eventually(
        lambda: run_monitor(gw).expired,
        timeout_s=120,
        interval_s=0.5,
        message="the lease never expired",
    )
    assert expired == [job_id]
    requeued = gw.jobs.get(job_id)
    assert requeued is not None
    assert requeued.state is JobState.QUEUED

    second = stack.start_worker("worker-2")

    def ended() -> Job | None:
        job = gw.jobs.get(job_id)
        return job if job is not None and job.state.terminal else None

    # Two shared CPU cores beside the emulators: a minute or more on a busy machine.
    done = eventually(
        ended, timeout_s=300, interval_s=0.2, message="the second worker never finished the job"
    )
    assert done.state is JobState.SUCCEEDED
    assert done.attempts == 2
    finished = f'"job succeeded", "job_id": "{job_id}"'
    eventually(  # the log line follows the document's update
        lambda: finished in second.log_path.read_text(),
        timeout_s=60,
        message="the second worker never logged the success",
    )
    logs = first.log_path.read_text() + second.log_path.read_text()
    assert logs.count(finished) == 1
    assert finished in second.log_path.read_text()
