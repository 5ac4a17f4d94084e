"""One batch of N items against the same N jobs submitted one by one, in one run on the emulators.

Both go through the front door (the API function in this process) and are run by the same
worker: a streaming pull on the 4090's subscription handing each job message to one of
``--workers`` threads, each calling ``JobRunner.run`` (claim, lease, store, finish, announce),
whose "synthesis" takes no time: it stores a fixed 0.1 s WAV. A tap on the results topic notes
when each result arrives. Timed, from the first byte submitted to the last result:

(a) ``POST /v1/tts/batch`` with N items: until the batch's own result (its last item settles it);
(b) N ``POST /v1/tts/jobs``, one after another: until the last of their N results.

What (a) adds over (b) is the batch's bookkeeping: every finished item counts its ended siblings
and the last one settles the parent. Also timed, as the floor both stand on: N bare messages
published one by one and delivered to the same threads, which only ack them. The rounds
alternate which goes first. Emulator latencies are not cloud latencies; the ratios are what
carry over. Usage: python bench/batch.py [--items N] [--workers N] [--rounds N]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.emulated import emulated_gateway
from infra.emulators import Emulators

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 900.0
SETTLE_GRACE_S = 10.0
"""How long after its last item's result a batch may take to announce its own before the bench
settles it as the monitor would (and says so)."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with Emulators() as emulators:
        os.environ.update(emulators.env)
        run(args)


def run(args: argparse.Namespace) -> None:
    # Imported after the emulator variables are set: the clients read them when built.
    import functions_framework
    import google.cloud.pubsub_v1 as pubsub_v1
    from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

    from gpu_worker.audio.encoding import Waveform, encode
    from gpu_worker.bucket_io import BucketIO
    from gpu_worker.prompt_cache import PromptCache
    from gpu_worker.runner import JobRunner, RunnerConfig
    from gpu_worker.tasks import Task
    from shared.adapters.pubsub import low_latency_publisher
    from shared.domain.audio_formats import AudioFormat
    from shared.domain.jobs import JobOutput, JobState
    from shared.usecases.parents import settle
    from shared.wire.messages import JobMessage

    stack = emulated_gateway()
    settings, gw, secret = stack.settings, stack.gateway, stack.key
    project = settings.project_id

    silence = np.zeros(2_400, dtype=np.float32)
    wav = encode(Waveform(samples=silence, sample_rate=24_000), fmt=AudioFormat.WAV)
    io = BucketIO(gateway=gw, prompts=PromptCache(max_bytes=0, max_file_bytes=0))

    class FixedAudio:
        def execute(self, task: Task) -> JobOutput:
            return JobOutput(audio=io.store_audio(task, wav, parts=0))

    w = settings.worker
    runner = JobRunner(
        gateway=gw,
        executor=FixedAudio(),
        config=RunnerConfig(worker_id="bench", backend_id=w.backend_id, lease_s=60),
    )
    subscriber = pubsub_v1.SubscriberClient()

    def serve(subscription: str, handle: Callable[[Any], None]) -> Any:
        """``--workers`` threads taking messages off ``subscription``, as the worker does."""
        return subscriber.subscribe(
            subscription,
            callback=handle,
            flow_control=pubsub_v1.types.FlowControl(max_messages=args.workers),
            scheduler=ThreadScheduler(
                ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="job")
            ),
        )

    def run_job(message: Any) -> None:
        result = runner.run(JobMessage.decode(message.data))
        if result.ack:
            message.ack()
        else:
            message.nack()

    arrived: dict[str, float] = {}  # job id -> when its first result message arrived
    lock = threading.Lock()

    def on_result(message: Any) -> None:
        now = time.perf_counter()
        with lock:
            arrived.setdefault(message.attributes["job_id"], now)
        message.ack()

    tap = subscriber.subscription_path(project, f"bench-batch-{uuid.uuid4().hex[:8]}")
    subscriber.create_subscription(
        name=tap, topic=subscriber.topic_path(project, settings.results_topic)
    )
    futures = [
        serve(tap, on_result),
        serve(subscriber.subscription_path(project, w.subscription), run_job),
    ]

    client = functions_framework.create_app(
        target="api", source=str(ROOT / "functions/main.py")
    ).test_client()
    headers = {"Authorization": f"Bearer {secret}"}
    logging.disable(logging.INFO)  # a line a job step would drown the figures; warnings stay

    def item(tag: str, i: int) -> dict[str, object]:
        return {"text": f"Line {i} of {tag}.", "speaker": "Ryan", "language": "en",
                "format": "wav"}  # fmt: skip

    def wait_for(ids: list[str], what: str) -> float:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            with lock:
                if all(i in arrived for i in ids):
                    return max(arrived[i] for i in ids)
            if time.monotonic() > deadline:
                missing = [i for i in ids if i not in arrived]
                raise SystemExit(f"{what}: {len(missing)} results never arrived ({missing[:5]})")
            time.sleep(0.01)

    notes: list[str] = []
    left: list[logging.LogRecord] = []  # items that could not move their batch (contention)

    class Kept(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            left.append(record)

    logging.getLogger("shared.usecases.parents").addHandler(Kept(logging.WARNING))

    def batch_once(tag: str) -> float:
        left.clear()
        started = time.perf_counter()
        body = {"items": [{"key": f"{tag}-{i:04d}", **item(tag, i)} for i in range(args.items)]}
        response = client.post("/v1/tts/batch", json=body, headers=headers)
        assert response.status_code == 202, response.data
        submitted = time.perf_counter() - started
        parent = str(response.json["id"])
        children = [f"{parent}i{i}" for i in range(args.items)]
        last_item = wait_for(children, f"batch {tag}'s items")
        deadline = time.monotonic() + SETTLE_GRACE_S
        while time.monotonic() < deadline:
            with lock:
                if parent in arrived:
                    break
            time.sleep(0.01)
        else:
            # Left to the monitor by its last item (a lost race or contention): settle it as
            # the monitor's pass would, and count the grace in (a), as production would wait.
            notes.append(f"{tag}: not settled by its last item; settled as the monitor would")
            settle(gw, parent)
        ended = wait_for([parent], f"batch {tag}")
        job = gw.jobs.get(parent)
        if job is None or job.state is not JobState.SUCCEEDED:
            raise SystemExit(f"batch {tag} ended {job.state if job else 'missing'}")
        notes.append(
            f"{tag}: submitted in {submitted:.2f} s; its result "
            f"{(ended - last_item) * 1000:.0f} ms after its last item's; {len(left)} items met "
            "contention on the batch and left it to the monitor"
        )
        return ended - started

    def singles_once(tag: str) -> float:
        started = time.perf_counter()
        ids = []
        for i in range(args.items):
            response = client.post("/v1/tts/jobs", json=item(tag, i), headers=headers)
            assert response.status_code == 202, response.data
            ids.append(str(response.json["id"]))
        notes.append(f"{tag}: submitted in {time.perf_counter() - started:.2f} s")
        return wait_for(ids, f"singles {tag}") - started

    # -- the floor: bare messages through the same pull and threads ---------------------------
    publisher = low_latency_publisher()
    topic = publisher.topic_path(project, "bench-batch-bare")
    publisher.create_topic(name=topic)
    bare_sub = subscriber.subscription_path(project, "bench-batch-bare")
    subscriber.create_subscription(name=bare_sub, topic=topic)

    def bare_ack(message: Any) -> None:
        now = time.perf_counter()
        with lock:
            arrived.setdefault(message.data.decode(), now)
        message.ack()

    futures.append(serve(bare_sub, bare_ack))

    def bare_once(tag: str) -> float:
        started = time.perf_counter()
        ids = [f"bare-{tag}-{i}" for i in range(args.items)]
        for i in ids:
            publisher.publish(topic, i.encode()).result()
        return wait_for(ids, f"bare {tag}") - started

    # Warm-up: the API's clients, the pull streams, the first documents.
    batch_once("warm-batch")
    singles_once("warm-singles")
    bare_once("warm")
    notes.clear()

    runs: dict[str, list[float]] = {"batch": [], "singles": [], "bare": []}
    order = [("batch", batch_once), ("singles", singles_once)]
    for r in range(args.rounds):
        for name, once in order if r % 2 == 0 else order[::-1]:
            runs[name].append(once(f"{name}-{r}"))
        runs["bare"].append(bare_once(str(r)))
    for future in futures:
        future.cancel()

    def line(name: str, xs: list[float]) -> str:
        each = ", ".join(f"{x:.2f}" for x in xs)
        per_job = statistics.median(xs) / args.items * 1000
        return (
            f"{name:<38} median {statistics.median(xs):7.2f} s  ({per_job:5.1f} ms a job; "
            f"rounds: {each})"
        )

    batch, singles, bare = (statistics.median(runs[k]) for k in ("batch", "singles", "bare"))
    print(f"{args.items} jobs, {args.workers} worker threads, {args.rounds} rounds, no synthesis")
    print(line(f"bare: {args.items} messages published+acked", runs["bare"]))
    print(line(f"(b) {args.items} single jobs, submit->last", runs["singles"]))
    print(line(f"(a) one {args.items}-item batch, submit->result", runs["batch"]))
    print(
        f"ratio (a)/(b): {batch / singles:.2f}x (target <= 1.2x; per round: "
        + ", ".join(f"{a / b:.2f}x" for a, b in zip(runs["batch"], runs["singles"], strict=True))
        + f"); (b)/bare {singles / bare:.2f}x, (a)/bare {batch / bare:.2f}x"
    )
    for note in notes:
        print(f"  {note}")


if __name__ == "__main__":
    main()
