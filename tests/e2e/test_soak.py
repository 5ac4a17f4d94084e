"""Soak: a book's worth of work at once on the whole local stack, while the worker process is
killed twice and the stack's own monitor ticks on the cloud's schedule.

At once: three 200-item chapters submitted as batches with ``join``, 100 single jobs over HTTP
and 50 over the intake topic. Then: every batch ends succeeded with its joined file; every job
ends in exactly one terminal state (the one its result messages carry); every ended job is
announced under exactly one ``announcement_id``. Result messages are at least once, so copies
may arrive: they are counted and printed, not failed."""

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
from shared.domain.jobs import Job, JobState
from shared.domain.keys import hash_key, key_id_for, sign_message
from shared.settings import Settings
from shared.usecases.gateway import Gateway

pytestmark = [pytest.mark.e2e, pytest.mark.soak]

CHAPTERS = 3
ITEMS = 200
HTTP_JOBS = 100
INTAKE_JOBS = 50
TOTAL = CHAPTERS * (1 + ITEMS + 1) + HTTP_JOBS + INTAKE_JOBS
"""Every job the dev key owns at the end: per chapter its batch, its items and its join job."""
LEASE_S = 3
DEADLINE_S = 3600
"""The whole run, generously: 9 to 16 minutes on two busy shared CPU cores. The emulator lets
a killed worker's stream hold far more messages than its flow control (until their ack
deadline), so after a kill the last jobs move at the pace of the monitor's republishing."""
CREATED_S = 300
"""Every submitted job exists this long after the last submission (the intake's are made as
its push subscription delivers), or the test stops: one that never will is not waited for."""


@pytest.fixture(scope="module")
def stack(tiny_model_dir: str) -> Iterator[DevStack]:
    env = {"TTS_WORKER__LEASE_S": str(LEASE_S), "TTS_WORKER__HEARTBEAT_S": "1"}
    # The stack's own monitor, on the tick topology.yaml schedules for the cloud.
    with DevStack(models=(tiny_model_dir,), extra_env=env) as running:
        assert running.monitor_every_s is not None
        yield running


@pytest.fixture
def gw(stack: DevStack, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    for name, value in stack.emulators.env.items():
        monkeypatch.setenv(name, value)
    return build_gateway(Settings(bucket=stack.bucket))


@pytest.mark.timeout(DEADLINE_S + 600)
def test_chapters_jobs_and_pipelines_at_once_through_two_worker_crashes_end_once_each(
    stack: DevStack, gw: Gateway
) -> None:
    started = time.monotonic()
    project = gw.settings.project_id
    subscriber = pubsub_v1.SubscriberClient()
    tap = subscriber.subscription_path(project, f"soak-{uuid.uuid4().hex[:8]}")
    subscriber.create_subscription(
        name=tap, topic=subscriber.topic_path(project, gw.settings.results_topic)
    )
    headers = {"Authorization": f"Bearer {stack.api_key}"}

    copies: Counter[str] = Counter()  # result messages received, by announcement id
    announced: dict[str, set[tuple[str, str]]] = {}  # job -> distinct (announcement, state)
    mismatched: list[str] = []  # jobs whose body and attributes named different announcements
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            response = subscriber.pull(subscription=tap, max_messages=100, timeout=5)
            for received in response.received_messages:
                attributes = received.message.attributes
                body = json.loads(received.message.data)
                if body["announcement_id"] != attributes["announcement_id"]:
                    mismatched.append(attributes["job_id"])
                copies[attributes["announcement_id"]] += 1
                announced.setdefault(attributes["job_id"], set()).add(
                    (attributes["announcement_id"], body["state"])
                )
            if response.received_messages:
                subscriber.acknowledge(
                    subscription=tap, ack_ids=[r.ack_id for r in response.received_messages]
                )

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()

    def chapter(c: int) -> str:
        items = [
            {"key": f"ch{c}-{i:04d}", "text": f"Chapter {c}, paragraph {i}.", "speaker": "Ryan",
             "language": "en", "format": "wav"}
            for i in range(ITEMS)
        ]  # fmt: skip
        response = requests.post(
            f"{stack.base_url}/v1/tts/batch",
            json={"items": items, "join": True, "join_gap_ms": 100},
            headers={**headers, "Idempotency-Key": f"soak-chapter-{c}"},
            timeout=300,
        )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def over_http(i: int) -> str:
        body = {"text": f"Soak line {i}.", "speaker": "Ryan", "language": "en"}
        response = requests.post(
            f"{stack.base_url}/v1/tts/jobs", json=body, headers=headers, timeout=120
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
        chapters = [pool.submit(chapter, c) for c in range(CHAPTERS)]
        singles = [pool.submit(over_http, i) for i in range(HTTP_JOBS)]
        pipelined = [pool.submit(over_intake, i) for i in range(INTAKE_JOBS)]
        batch_ids = [f.result() for f in chapters]
        http_ids = [f.result() for f in singles]
        for f in pipelined:
            f.result()
    print(f"\nsoak: submitted in {time.monotonic() - started:.0f} s")

    def owned() -> list[Job]:
        return gw.jobs.list_owned(
            owner="dev", state=None, created_after=None, start_after=None, limit=TOTAL + 100
        )

    def ended() -> int:
        return sum(1 for job in owned() if job.state.terminal)

    created_by = time.monotonic() + CREATED_S
    while (made := len(owned())) < TOTAL - CHAPTERS:  # all but the joins, made at the end
        assert time.monotonic() < created_by, f"{made} of {TOTAL - CHAPTERS} jobs were made"
        time.sleep(2)

    deadline = started + DEADLINE_S
    # Two hard crashes while the queue is full; the monitor requeues what each one held.
    worker = stack.process("worker")
    for crash, name in enumerate(("worker-2", "worker-3"), start=1):
        target = crash * TOTAL // 3
        while (done := ended()) < target:
            assert time.monotonic() < deadline, f"{done} of {TOTAL} ended before crash {crash}"
            time.sleep(5)
        print(f"soak: crash {crash} at {time.monotonic() - started:.0f} s, {done} jobs ended")
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=10)
        worker = stack.start_worker(name)
        print(f"soak: {name} ready at {time.monotonic() - started:.0f} s")

    reported = time.monotonic()
    while True:
        jobs = owned()
        if len(jobs) == TOTAL and all(j.state.terminal for j in jobs):
            break
        so_far = Counter(j.state.value for j in jobs)
        assert time.monotonic() < deadline, f"{len(jobs)} of {TOTAL} jobs: {dict(so_far)}"
        if time.monotonic() - reported >= 60:
            reported = time.monotonic()
            print(f"soak: at {reported - started:.0f} s, {dict(so_far)}")
        time.sleep(5)
    ended_at = time.monotonic()
    ids = {j.id for j in jobs}
    announce_by = time.monotonic() + 3 * (stack.monitor_every_s or 0.0)
    while set(announced) != ids and time.monotonic() < announce_by:
        time.sleep(1)
    stop.set()
    collector.join(timeout=10)

    states = Counter(j.state for j in jobs)
    duplicates = {k: n for k, n in copies.items() if n > 1}
    print(
        f"soak: {len(jobs)} jobs ({CHAPTERS} joined batches of {ITEMS} items, {HTTP_JOBS} over "
        f"HTTP, {INTAKE_JOBS} over the intake), 2 worker kills, all ended after "
        f"{ended_at - started:.0f} s; states {dict(Counter(s.value for s in states.elements()))}; "
        f"{sum(copies.values())} result messages, {len(copies)} distinct announcements, "
        f"{sum(duplicates.values()) - len(duplicates)} duplicate copies of {len(duplicates)} "
        f"announcements {sorted(duplicates)}"
    )
    for job in jobs:
        if job.state is not JobState.SUCCEEDED:
            print(f"soak: {job.id} ({job.request.mode}) {job.state.value}: {job.error}")

    assert set(http_ids) | set(batch_ids) <= ids
    assert all(j.state.terminal for j in jobs)
    for batch_id in batch_ids:
        parent = next(j for j in jobs if j.id == batch_id)
        assert parent.state is JobState.SUCCEEDED, (parent.state, parent.error)
        manifest = requests.get(
            f"{stack.base_url}/v1/jobs/{batch_id}/manifest", headers=headers, timeout=60
        ).json()
        assert [item["state"] for item in manifest["items"]] == ["succeeded"] * ITEMS
        assert manifest["joined"] is not None
        assert manifest["joined"]["state"] == "succeeded"
        assert parent.result is not None
        assert parent.result.duration_s > 0
        audio = requests.get(
            f"{stack.base_url}/v1/jobs/{batch_id}/audio", headers=headers, timeout=120
        )
        assert audio.status_code == 200
        assert len(audio.content) == parent.result.bytes
    # Each job announced, under one announcement id, with the state it ended in.
    assert mismatched == []
    assert ids - set(announced) == set()
    assert {k: v for k, v in announced.items() if len(v) != 1} == {}
    said = {j.id: (j.state.value, announced[j.id]) for j in jobs}
    assert {k: v for k, v in said.items() if {state for _, state in v[1]} != {v[0]}} == {}
