"""Routing overhead: "HTTP accept -> job in the worker's hands" against the bare primitives.

Both paths run in this process against the same emulators, one job at a time:
- gateway: POST /v1/tts/jobs through functions-framework (auth, validation, Firestore create,
  Pub/Sub publish) -> streaming pull in the 4090 subscriber -> transactional claim -> the
  executor is called. The clock stops when the executor starts.
- bare: one Firestore document create + one Pub/Sub publish -> streaming-pull delivery to a
  callback. The least any design on these primitives can cost.

Prints p50/p99 of each and the ratio. Emulator latencies are not cloud latencies; the ratio is
what carries over. Usage: python bench/routing_overhead.py [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.emulated import emulated_gateway
from infra.emulators import Emulators


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()

    with Emulators() as emulators:
        os.environ.update(emulators.env)
        gateway_ms, bare_ms = run(args.jobs, args.warmup)

    def line(name: str, xs: list[float]) -> str:
        return (
            f"{name:<8} n={len(xs):<4} p50={percentile(xs, 50):7.2f} ms  "
            f"p99={percentile(xs, 99):7.2f} ms  mean={statistics.fmean(xs):7.2f} ms"
        )

    print(line("bare", bare_ms))
    print(line("gateway", gateway_ms))
    print(
        f"ratio gateway/bare: p50 {percentile(gateway_ms, 50) / percentile(bare_ms, 50):.2f}x, "
        f"p99 {percentile(gateway_ms, 99) / percentile(bare_ms, 99):.2f}x"
    )


def run(jobs: int, warmup: int) -> tuple[list[float], list[float]]:
    # Imported after the emulator variables are set: the clients read them when built.
    import functions_framework
    import google.cloud.pubsub_v1 as pubsub_v1
    from google.cloud import firestore

    from gpu_worker.heartbeat import Heartbeat
    from gpu_worker.runner import JobRunner, RunnerConfig
    from gpu_worker.subscriber import HomeSubscriber
    from shared.adapters.pubsub import low_latency_publisher
    from shared.domain.backends import BackendKind
    from shared.domain.jobs import JobOutput

    stack = emulated_gateway()
    settings, gw, secret = stack.settings, stack.gateway, stack.key

    in_hands = threading.Event()
    handed_at: list[float] = []

    class StampingExecutor:
        def execute(self, task: object) -> JobOutput:
            handed_at.append(time.perf_counter())
            in_hands.set()
            return JobOutput()

    runner = JobRunner(
        gateway=gw,
        executor=StampingExecutor(),
        config=RunnerConfig(worker_id="bench", backend_id="home-4090", lease_s=60),
    )
    beat = Heartbeat(
        store=gw.backends,
        backend_id="home-4090",
        kind=BackendKind.HOME_GPU,
        worker_id="bench",
        modes=("custom_voice",),
        models=("bench",),
        device="cpu",
        clock=gw.clock,
        interval_s=30,
    )
    sub_client = pubsub_v1.SubscriberClient()
    subscriber = HomeSubscriber(
        client=sub_client,
        subscription_path=sub_client.subscription_path(settings.project_id, "tts-jobs-home-4090"),
        runner=runner,
        heartbeat=beat,
        max_lease_s=120,
        shutdown_grace_s=30,
    )
    stop = threading.Event()
    serving = threading.Thread(target=subscriber.serve, args=(stop,), daemon=True)
    serving.start()

    api = functions_framework.create_app(
        target="api", source=str(Path(__file__).resolve().parent.parent / "functions/main.py")
    ).test_client()
    headers = {"Authorization": f"Bearer {secret}"}
    body = {"text": "Benchmark line.", "speaker": "Vivian", "language": "en"}

    # The bare primitives, on a topic and subscription of their own.
    project = settings.project_id
    publisher = low_latency_publisher()
    topic = publisher.topic_path(project, "bench-bare")
    publisher.create_topic(name=topic)
    bare_sub = sub_client.subscription_path(project, "bench-bare")
    sub_client.create_subscription(name=bare_sub, topic=topic)
    docs = firestore.Client(project=project).collection("bench_bare")
    delivered = threading.Event()
    delivered_at: list[float] = []

    def on_message(message: pubsub_v1.subscriber.message.Message) -> None:
        delivered_at.append(time.perf_counter())
        delivered.set()
        message.ack()

    bare_future = sub_client.subscribe(
        bare_sub, callback=on_message, flow_control=pubsub_v1.types.FlowControl(max_messages=1)
    )

    def gateway_once() -> float:
        in_hands.clear()
        started = time.perf_counter()
        response = api.post("/v1/tts/jobs", json=body, headers=headers)
        assert response.status_code == 202, response.data
        if not in_hands.wait(30):
            raise SystemExit("a job never reached the worker")
        elapsed = handed_at[-1] - started
        job_id = response.get_json()["id"]
        while gw.jobs.get(job_id).state.value != "succeeded":  # type: ignore[union-attr]
            time.sleep(0.005)
        return elapsed * 1000

    def bare_once() -> float:
        delivered.clear()
        started = time.perf_counter()
        job_id = uuid.uuid4().hex
        docs.document(job_id).create({"state": "queued", "created_at": time.time()})
        publisher.publish(topic, job_id.encode(), backend="home-4090").result()
        if not delivered.wait(30):
            raise SystemExit("a bare message was never delivered")
        return (delivered_at[-1] - started) * 1000

    # Interleaved, with random gaps, so neither path rides a lucky phase of the emulator's
    # delivery loop.
    jitter = random.Random(7)
    gateway_ms: list[float] = []
    bare_ms: list[float] = []
    for i in range(warmup + jobs):
        for name, once in jitter.sample([("gateway", gateway_once), ("bare", bare_once)], 2):
            time.sleep(jitter.uniform(0, 0.05))
            elapsed = once()
            if i >= warmup:
                (gateway_ms if name == "gateway" else bare_ms).append(elapsed)
    bare_future.cancel()
    stop.set()
    serving.join(timeout=30)
    return gateway_ms, bare_ms


if __name__ == "__main__":
    main()
