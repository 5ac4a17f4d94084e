"""Soak: a few hundred jobs at once over HTTP and the intake topic, on the whole local stack,
while the worker process is killed twice. Every accepted job reaches exactly one terminal state
and announces it once: result messages are at least once, so copies may arrive, but every job
has exactly one distinct ``announcement_id``, and the copies are counted and reported."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from google.cloud import pubsub_v1

from infra.devstack import DevStack
from shared.bootstrap import build_gateway
from shared.domain.jobs import JobState
from shared.domain.keys import hash_key, key_id_for, sign_message
from shared.settings import MonitorSettings, Settings
from shared.usecases.gateway import Gateway
from shared.usecases.monitor import run_monitor

pytestmark = [pytest.mark.e2e, pytest.mark.soak]

HTTP_JOBS = 120
INTAKE_JOBS = 80
LEASE_S = 3


@pytest.fixture(scope="module")
def stack(tiny_model_dir: str) -> Iterator[DevStack]:
    env = {"TTS_WORKER__LEASE_S": str(LEASE_S), "TTS_WORKER__HEARTBEAT_S": "1"}
    with DevStack(models=(tiny_model_dir,), extra_env=env) as running:
        yield running


@pytest.fixture
def gw(stack: DevStack, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    for name, value in stack.emulators.env.items():
        monkeypatch.setenv(name, value)
    # A killed subscriber's outstanding messages come back only after their ack deadline; the
    # monitor (run by this test) publishes again what waits longer than this, as in production.
    monitor = MonitorSettings(requeue_after_s=10, announce_grace_s=5)
    return build_gateway(Settings(bucket=stack.bucket, monitor=monitor))


@pytest.mark.timeout(1500)
def test_hundreds_of_jobs_through_two_worker_crashes_end_once_each(
    stack: DevStack, gw: Gateway
) -> None:
    project = gw.settings.project_id
    subscriber = pubsub_v1.SubscriberClient()
    tap = subscriber.subscription_path(project, f"soak-{uuid.uuid4().hex[:8]}")
    subscriber.create_subscription(
        name=tap, topic=subscriber.topic_path(project, gw.settings.results_topic)
    )
    headers = {"Authorization": f"Bearer {stack.api_key}"}

    def over_http(i: int) -> str:
        body = {"text": f"Soak line {i}.", "speaker": "Ryan", "language": "en"}
        response = requests.post(
            f"{stack.base_url}/v1/tts/jobs", json=body, headers=headers, timeout=60
        )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    key_id = key_id_for(hash_key(stack.api_key))
    publisher = pubsub_v1.PublisherClient()
    intake = publisher.topic_path(project, "tts-intake")

    def over_intake(i: int) -> None:
        data = json.dumps({"text": f"Pipeline line {i}.", "speaker": "Ryan"}).encode()
        publisher.publish(
            intake,
            data,
            key_id=key_id,
            signature=sign_message(stack.api_key, data),
            idempotency_key=f"soak-{i}",
        ).result(timeout=60)

    with ThreadPoolExecutor(max_workers=8) as pool:
        http_ids = pool.map(over_http, range(HTTP_JOBS))
        list(pool.map(over_intake, range(INTAKE_JOBS)))
        http_ids = list(http_ids)

    results: Counter[str] = Counter()  # messages received, by announcement id
    announced: dict[str, set[str]] = {}  # the distinct announcement ids received, by job
    mismatched: list[str] = []  # jobs whose body and attributes named different announcements
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            response = subscriber.pull(subscription=tap, max_messages=100, timeout=5)
            if response.received_messages:
                for received in response.received_messages:
                    attributes = received.message.attributes
                    body = json.loads(received.message.data)
                    if body["announcement_id"] != attributes["announcement_id"]:
                        mismatched.append(attributes["job_id"])
                    results[attributes["announcement_id"]] += 1
                    announced.setdefault(attributes["job_id"], set()).add(
                        attributes["announcement_id"]
                    )
                subscriber.acknowledge(
                    subscription=tap, ack_ids=[r.ack_id for r in response.received_messages]
                )

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()

    def owned() -> list[object]:
        return gw.jobs.list_owned(
            owner="dev", state=None, created_after=None, start_after=None, limit=1000
        )

    def finished() -> int:
        return sum(1 for job in owned() if job.state.terminal)  # type: ignore[attr-defined]

    # Two hard crashes while the queue is full; the monitor requeues what each one held.
    worker = stack.process("worker")
    for crash, name in enumerate(("worker-2", "worker-3"), start=1):
        target = finished() + 30
        deadline = time.monotonic() + 360
        while finished() < target:
            assert time.monotonic() < deadline, f"the queue did not move before crash {crash}"
            run_monitor(gw)
            time.sleep(1)
        print(f"soak: crash {crash} after {finished()} finished jobs")
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=10)
        worker = stack.start_worker(name)

    deadline = time.monotonic() + 600
    while True:
        run_monitor(gw)  # requeues expired leases, publishes lost results
        jobs = owned()
        if len(jobs) == HTTP_JOBS + INTAKE_JOBS and all(j.state.terminal for j in jobs):  # type: ignore[attr-defined]
            break
        assert time.monotonic() < deadline, Counter(j.state.value for j in jobs)  # type: ignore[attr-defined]
        time.sleep(1)
    deadline = time.monotonic() + 60
    ids = {j.id for j in jobs}  # type: ignore[attr-defined]
    while set(announced) != ids and time.monotonic() < deadline:
        time.sleep(0.5)
    stop.set()
    collector.join(timeout=10)

    assert set(http_ids) <= ids
    states = Counter(j.state for j in jobs)  # type: ignore[attr-defined]
    assert states == {JobState.SUCCEEDED: HTTP_JOBS + INTAKE_JOBS}, states
    assert set(announced) == ids
    assert mismatched == []
    # One announcement a job (none was retried), however many copies of it arrived.
    assert {k: v for k, v in announced.items() if len(v) != 1} == {}
    assert len(results) == len(ids)
    copies = {k: v for k, v in results.items() if v > 1}
    print(
        f"soak: {len(ids)} jobs ({HTTP_JOBS} over HTTP, {INTAKE_JOBS} over the intake), "
        f"2 worker kills, states {dict(Counter(s.value for s in states.elements()))}, "
        f"{sum(results.values())} result messages, {len(results)} distinct announcements, "
        f"{sum(copies.values()) - len(copies)} duplicate copies {sorted(copies)}"
    )
