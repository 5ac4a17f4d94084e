"""The synchronous and streaming doors against what they cannot avoid, in one run on the emulators.

(a) Synchronous overhead. ``POST /v1/audio/speech`` through functions-framework, with a worker in
    this process (streaming pull, transactional claim) whose "synthesis" takes no time: it stores
    a fixed one-second WAV. So the call's whole latency is what the door adds to synthesis. It is
    compared with the bare primitives such a call must use, in order: a Firestore create, a
    Pub/Sub publish and its streaming-pull delivery, a transactional claim, a GCS put, a Firestore
    update, a GCS get.
(b) Time to first audio. A ten-sentence input streamed (``stream_format=audio``, pcm) through the
    same path with the tiny Qwen3-TTS model doing real generation: the time until the first
    bytes arrive, against the time the same model takes to say the first sentence alone (the
    same seed, interleaved), p50 and p90 of each and their ratios (target: p50 at most 1.3x).
    The model is built to speak lines nearer speech's length (``SPEAKING_EOS_LOGIT``: a median
    of 14 frames, 1.1 s), so the engine streams a line in pieces of ``STREAM_FRAMES`` frames as
    it would a real sentence; ``--short-lines`` keeps the test suite's model, whose lines of
    about 5 frames are each one piece (the gateway's fixed costs beside a very short line).
    Where the difference goes is printed too, per stream from the job's own timestamps: the
    API before the job exists, dispatch (create to claim: publish, streaming pull, claim), the
    worker to its first piece stored and announced, and delivery (announced to the caller's
    first byte: the listener, the piece's read, the response).

Emulator latencies are not cloud latencies; the ratios are what carry over. The waits are told
by a Firestore listener (the emulator serves it), polling with the deployment's defaults (0.1 s
doubling to 1 s) only as the fallback.
Usage: python bench/speech.py [--calls N] [--streams N] [--short-lines]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.emulated import emulated_gateway
from infra.emulators import Emulators

ROOT = Path(__file__).resolve().parent.parent

SENTENCES = [f"This is sentence number {i} of the benchmark." for i in range(10)]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


def line(name: str, xs: list[float]) -> str:
    return (
        f"{name:<26} n={len(xs):<4} p50={pct(xs, 50):8.1f} ms  p90={pct(xs, 90):8.1f} ms  "
        f"mean={statistics.fmean(xs):8.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--short-lines", action="store_true")
    args = parser.parse_args()
    # One OpenMP thread for torch, as the test suite and bench/verify.py use (a caller's
    # setting wins): the tiny model's matrices are too small to split, and on a small machine a
    # second spinning thread fights the stream's own I/O threads and the emulators, slowing the
    # streamed generation (about 40 ms of a 230 ms sentence on two cores) where a GPU worker
    # would not be, while the sentence alone runs with nothing beside it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as models_dir, Emulators() as emulators:
        os.environ.update(emulators.env)
        from gpu_worker.tiny_model import EOS_LOGIT, SPEAKING_EOS_LOGIT, build_tiny_model

        eos_logit = EOS_LOGIT if args.short_lines else SPEAKING_EOS_LOGIT
        tiny = build_tiny_model(Path(models_dir) / "custom_voice", eos_logit=eos_logit)
        os.environ["TTS_WORKER__MODELS"] = f'["{tiny}"]'
        os.environ["TTS_WORKER__MAX_CHUNK_CHARS"] = "60"  # one sentence a chunk
        run(args)


def run(args: argparse.Namespace) -> None:
    # Imported after the emulator variables are set: the clients read them when built.
    import functions_framework
    import google.cloud.pubsub_v1 as pubsub_v1
    from google.cloud import firestore

    from gpu_worker.audio.encoding import Waveform, encode
    from gpu_worker.bootstrap import bootstrap, load_models
    from gpu_worker.bucket_io import BucketIO
    from gpu_worker.prompt_cache import PromptCache
    from gpu_worker.tasks import Task, TaskExecutor
    from shared.adapters.clients import storage_client
    from shared.adapters.pubsub import low_latency_publisher
    from shared.domain.audio_formats import AudioFormat
    from shared.domain.catalog import Language
    from shared.domain.jobs import JobOutput, JobState
    from shared.domain.modes import ModelType

    stack = emulated_gateway()
    settings, gw, secret = stack.settings, stack.gateway, stack.key
    models = load_models(settings)

    tone = np.sin(2 * np.pi * 220 * np.arange(24_000) / 24_000).astype(np.float32) * 0.3
    fixed_wav = encode(Waveform(samples=tone, sample_rate=24_000), fmt=AudioFormat.WAV)
    io_port = BucketIO(gateway=gw, prompts=PromptCache(max_bytes=0, max_file_bytes=0))
    real_executor = TaskExecutor(
        models=models,
        io=io_port,
        limits=settings.voices,
        max_chunk_chars=settings.worker.max_chunk_chars,
        max_join_s=settings.worker.max_join_s,
    )
    instant = {"on": False}

    class SwitchableExecutor:
        """Real synthesis for (b); for (a) a synthesis that takes no time (stores a fixed WAV)."""

        def execute(self, task: Task) -> JobOutput:
            if instant["on"]:
                return JobOutput(audio=io_port.store_audio(task, fixed_wav, parts=0))
            return real_executor.execute(task)

    worker = bootstrap(settings, gateway=gw, models=models, executor=SwitchableExecutor())
    stop = threading.Event()
    serving = threading.Thread(target=worker.subscriber.serve, args=(stop,), daemon=True)
    serving.start()

    api = functions_framework.create_app(target="api", source=str(ROOT / "functions/main.py"))
    client = api.test_client()
    headers = {"Authorization": f"Bearer {secret}"}

    # -- (a) -----------------------------------------------------------------------------------
    project = settings.project_id
    publisher = low_latency_publisher()
    sub_client = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project, "bench-speech-bare")
    publisher.create_topic(name=topic)
    bare_sub = sub_client.subscription_path(project, "bench-speech-bare")
    sub_client.create_subscription(name=bare_sub, topic=topic)
    db = firestore.Client(project=project)
    docs = db.collection("bench_speech_bare")
    bucket = storage_client(settings).bucket(settings.bucket)
    delivered = threading.Event()

    def on_message(message: Any) -> None:
        message.ack()
        delivered.set()

    bare_future = sub_client.subscribe(
        bare_sub, callback=on_message, flow_control=pubsub_v1.types.FlowControl(max_messages=1)
    )

    def sync_once() -> float:
        started = time.perf_counter()
        response = client.post(
            "/v1/audio/speech",
            json={"model": "tts-1", "input": "Benchmark line.", "voice": "vivian",
                  "response_format": "wav"},
            headers=headers,
        )  # fmt: skip
        assert response.status_code == 200, response.data
        assert response.data == fixed_wav.data
        return (time.perf_counter() - started) * 1000

    def bare_once() -> float:
        started = time.perf_counter()
        job_id = uuid.uuid4().hex
        ref = docs.document(job_id)
        delivered.clear()
        ref.create({"state": "queued"})
        publisher.publish(topic, job_id.encode(), backend="home-4090").result()
        if not delivered.wait(30):
            raise SystemExit("a bare message was never delivered")

        @firestore.transactional
        def claim(transaction: Any) -> None:
            snapshot = ref.get(transaction=transaction)
            assert snapshot.get("state") == "queued"
            transaction.update(ref, {"state": "running"})

        claim(db.transaction())
        blob = bucket.blob(f"bench/{job_id}.wav")
        blob.upload_from_string(fixed_wav.data, content_type="audio/wav")
        ref.update({"state": "succeeded"})
        assert bucket.blob(f"bench/{job_id}.wav").download_as_bytes() == fixed_wav.data
        return (time.perf_counter() - started) * 1000

    instant["on"] = True
    jitter = random.Random(7)
    sync_ms: list[float] = []
    bare_ms: list[float] = []
    for i in range(args.warmup + args.calls):
        for name, once in jitter.sample([("sync", sync_once), ("bare", bare_once)], 2):
            elapsed = once()
            if i >= args.warmup:
                (sync_ms if name == "sync" else bare_ms).append(elapsed)
    bare_future.cancel()

    # -- (b) -----------------------------------------------------------------------------------
    instant["on"] = False
    engine = models.of_type(ModelType.CUSTOM_VOICE)
    text = " ".join(SENTENCES)

    # The same seed both ways: the stream's first chunk is exactly the generation timed alone.
    def first_sentence_once(seed: int) -> float:
        started = time.perf_counter()
        engine.generate_custom_voice(
            text=SENTENCES[0], speaker="Ryan", language=Language.ENGLISH, seed=seed
        )
        return (time.perf_counter() - started) * 1000

    # When each job's worker had its first piece stored and announced (its "first audio" log).
    announced: dict[str, float] = {}

    class FirstAudio(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "first audio":
                announced[record.__dict__["job_id"]] = record.__dict__["ttfa_s"]

    logging.getLogger("gpu_worker.bucket_io").addHandler(FirstAudio())
    parts: dict[str, list[float]] = {"api": [], "dispatch": [], "worker": [], "delivery": []}

    def breakdown(job_id: str, called: datetime, first_ms: float) -> None:
        job = gw.jobs.get(job_id)
        assert job is not None
        claimed = job.state_times[JobState.RUNNING]
        out_ms = announced[job_id] * 1000 + ms(job.created_at - called)
        parts["api"].append(ms(job.created_at - called))
        parts["dispatch"].append(ms(claimed - job.created_at))
        parts["worker"].append(out_ms - ms(claimed - called))
        parts["delivery"].append(first_ms - out_ms)

    def stream_once(seed: int) -> tuple[float, float, bytes]:
        called = datetime.now(UTC)
        started = time.perf_counter()
        response = client.post(
            "/v1/audio/speech",
            json={"model": "tts-1", "input": text, "voice": "ryan", "response_format": "pcm",
                  "stream_format": "audio", "language": "en", "seed": seed},
            headers=headers,
            buffered=False,
        )  # fmt: skip
        assert response.status_code == 200, response.data
        chunks = iter(response.response)
        first = next(chunks)
        first_ms = (time.perf_counter() - started) * 1000
        rest = b"".join(chunks)
        total = (time.perf_counter() - started) * 1000
        breakdown(response.headers["X-Job-Id"], called, first_ms)
        return first_ms, total, first + rest

    first_ms: list[float] = []
    ttfa_ms: list[float] = []
    total_ms: list[float] = []
    stream_once(0)  # warm: model kernels, connections
    for values in parts.values():
        values.clear()
    for seed in range(1, args.streams + 1):
        first_ms.append(first_sentence_once(seed))
        ttfa, total, pcm = stream_once(seed)
        ttfa_ms.append(ttfa)
        total_ms.append(total)
    audio_s = len(pcm) / 2 / 24_000
    stop.set()
    serving.join(timeout=30)

    print("(a) synchronous call, synthesis taking no time, against the bare primitives")
    print(line("bare primitives", bare_ms))
    print(line("POST /v1/audio/speech", sync_ms))
    print(
        f"ratio sync/bare: p50 {pct(sync_ms, 50) / pct(bare_ms, 50):.2f}x, "
        f"p90 {pct(sync_ms, 90) / pct(bare_ms, 90):.2f}x"
    )
    print("(b) streamed ten sentences (tiny model, real generation on this machine's CPU)")
    print(line("first sentence alone", first_ms))
    print(line("stream: first audio byte", ttfa_ms))
    print(line("stream: whole audio", total_ms))
    print(
        f"ratio first byte / first sentence alone: p50 "
        f"{pct(ttfa_ms, 50) / pct(first_ms, 50):.2f}x, p90 "
        f"{pct(ttfa_ms, 90) / pct(first_ms, 90):.2f}x (target: p50 at most 1.3x); "
        f"whole / first byte: {pct(total_ms, 50) / pct(ttfa_ms, 50):.1f}x "
        f"({audio_s:.1f} s of audio)"
    )
    print("where a stream's first audio goes, from the job's timestamps:")
    for name, values in parts.items():
        print(line(f"  {name}", values))
    # Each stream against its own first sentence (the same seed, so the same length of audio):
    # what the gateway added to that very generation, free of the seeds' spread.
    added = [t - f for t, f in zip(ttfa_ms, first_ms, strict=True)]
    print(line("  added, stream by stream", added))
    # The same primitives lie on a stream's path to its first audio (create, publish and pull,
    # claim; the piece's upload, its announcement, its read): what no gateway can go below.
    floor = pct(first_ms, 50) + pct(bare_ms, 50)
    print(
        f"floor: first sentence alone + the bare primitives of (a), p50 {floor:.1f} ms, "
        f"{floor / pct(first_ms, 50):.2f}x the sentence alone"
    )


if __name__ == "__main__":
    main()
