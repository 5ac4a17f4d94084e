"""A cache hit through the front door against a bare download of the same audio, in one run.

On the emulators: a seeded request is synthesized once (an in-process worker storing a fixed
one-second WAV); then, interleaved, ``POST /v1/audio/speech`` with the same request against one
bare GCS download of that audio object. Prints p50/p90 of each and the ratios.

What a hit costs on the answer's path: the key, the backend documents and the cache entry come
from the process's own bounded caches (one Firestore read each when they run out: the entry's
after ``TTS_API__CACHE_ENTRY_TTL_S``, so ``TTS_API__CACHE_ENTRY_TTL_S=0`` measures a process
that has not seen the key yet); then the job, created already finished, is written while the
audio is read (one GCS request), and the answer waits for both. Its announcement (publish and
the flag that records it) follows the answer. Each call checks that the job it names exists
the moment the answer is in.

The first calls warm both sides and are not counted: the Firestore and Pub/Sub emulators are
JVMs whose first hundred or so calls run two to three times slower than later ones, while the
bare side's GCS emulator is native from the start; counted cold, the ratio measures the
emulator's JIT rather than the gateway. Usage: python bench/cache.py [--calls N] [--warmup N]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.emulated import emulated_gateway
from infra.emulators import Emulators

ROOT = Path(__file__).resolve().parent.parent
LINE = "It was the best of times, it was the worst of times."


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    with Emulators() as emulators:
        os.environ.update(emulators.env)
        run(args)


def run(args: argparse.Namespace) -> None:
    # Imported after the emulator variables are set: the clients read them when built.
    import functions_framework

    from gpu_worker.audio.encoding import Waveform, encode
    from gpu_worker.bucket_io import BucketIO
    from gpu_worker.prompt_cache import PromptCache
    from gpu_worker.runner import JobRunner, RunnerConfig
    from gpu_worker.tasks import Task
    from shared.adapters.clients import storage_client
    from shared.domain.audio_formats import AudioFormat
    from shared.domain.jobs import JobOutput
    from shared.domain.keys import Principal, Scope
    from shared.domain.synthesis import CustomVoiceRequest
    from shared.usecases.jobs import submit_job
    from shared.wire.messages import JobMessage

    stack = emulated_gateway()
    settings, gw, secret = stack.settings, stack.gateway, stack.key

    tone = np.sin(2 * np.pi * 220 * np.arange(24_000) / 24_000).astype(np.float32) * 0.3
    wav = encode(Waveform(samples=tone, sample_rate=24_000), fmt=AudioFormat.WAV)
    io = BucketIO(gateway=gw, prompts=PromptCache(max_bytes=0, max_file_bytes=0))

    class FixedAudio:
        def execute(self, task: Task) -> JobOutput:
            return JobOutput(audio=io.store_audio(task, wav, parts=0))

    first = submit_job(
        gw,
        principal=Principal(owner="bench", scopes=frozenset({Scope.USER})),
        request=CustomVoiceRequest(text=LINE, speaker="Vivian", seed=1),
    )
    config = RunnerConfig(worker_id="bench", backend_id=first.backend, lease_s=60)
    JobRunner(gateway=gw, executor=FixedAudio(), config=config).run(JobMessage(job_id=first.id))
    done = gw.jobs.get(first.id)
    if done is None or done.result is None:
        raise SystemExit("the first synthesis did not finish")
    path = done.result.uri.removeprefix(f"gs://{settings.bucket}/")
    blob = storage_client(settings).bucket(settings.bucket).blob(path)

    client = functions_framework.create_app(
        target="api", source=str(ROOT / "functions/main.py")
    ).test_client()
    headers = {"Authorization": f"Bearer {secret}"}
    body = {"model": "tts-1", "input": LINE, "voice": "vivian", "response_format": "wav", "seed": 1}

    def hit_once() -> float:
        started = time.perf_counter()
        response = client.post("/v1/audio/speech", json=body, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.data
        assert response.data == wav.data
        # Read after the clock stopped; but with nothing in between: the promise is that the
        # job exists for GET /v1/jobs/{id} as soon as the caller has its audio.
        job = gw.jobs.get(response.headers["X-Job-Id"])
        if job is None or job.cached_from != first.id:
            raise SystemExit("a call was not served from the cache")
        return elapsed

    def bare_once() -> float:
        started = time.perf_counter()
        assert blob.download_as_bytes() == wav.data
        return (time.perf_counter() - started) * 1000

    jitter = random.Random(11)
    hit_ms: list[float] = []
    bare_ms: list[float] = []
    for i in range(args.warmup + args.calls):
        for name, once in jitter.sample([("hit", hit_once), ("bare", bare_once)], 2):
            elapsed = once()
            if i >= args.warmup:
                (hit_ms if name == "hit" else bare_ms).append(elapsed)

    def line(name: str, xs: list[float]) -> str:
        return (
            f"{name:<28} n={len(xs):<4} p50={pct(xs, 50):7.1f} ms  p90={pct(xs, 90):7.1f} ms  "
            f"mean={statistics.fmean(xs):7.1f} ms"
        )

    print(line("bare GCS download", bare_ms))
    print(line("cache hit /v1/audio/speech", hit_ms))
    print(
        f"ratio hit/bare: p50 {pct(hit_ms, 50) / pct(bare_ms, 50):.2f}x, "
        f"p90 {pct(hit_ms, 90) / pct(bare_ms, 90):.2f}x (no GPU work: the job is cached_from "
        f"{first.id})"
    )


if __name__ == "__main__":
    main()
