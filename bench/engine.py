"""The engines: real-time factor and time to first audio, per engine, against the bare model call.

On whatever device is present (the tiny offline model unless ``--model`` names a real one),
for each engine (the qwen-tts baseline; faster-qwen3-tts, eager on a machine without CUDA):
- bare: the library's own call on the same loaded model, nothing of ours around it
  (``Qwen3TTSModel.generate_custom_voice``; for faster-qwen3-tts its streaming generator, whose
  first chunk is its time to first audio);
- through ``Synthesizer.stream`` (budget, runaway guard, seeding, lock) at concurrency 1, 4
  and 8: time to first audio per request and real-time factor (audio seconds made per wall
  second, all requests together); the ratios at concurrency 1 are against bare;
- batched against one at a time: the same lines through the batch queue with the bound at 8
  (eight threads submitting together) and at 1.

Real-time factor > 1 is faster than real time. The tiny model is a few dozen units wide: its
figures say what our layers cost around the library, not what a GPU does with the real model.
Usage: python bench/engine.py [--model DIR] [--rounds N] [--stream-frames N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "She sells sea shells by the sea shore.",
    "All that glitters is not gold.",
    "The early bird catches the worm.",
    "Actions speak louder than words.",
    "Every cloud has a silver lining.",
    "Time flies when you are having fun.",
]
CONCURRENCY = (1, 4, 8)
"""Each divides len(SENTENCES): a round says every sentence once, that many at a time.
Concurrency 1 is measured interleaved with the bare call, request by request."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="a custom-voice model directory (default: tiny)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stream-frames", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            from gpu_worker.tiny_model import build_tiny_model

            model = str(build_tiny_model(Path(scratch) / "custom_voice"))
        run(model, rounds=args.rounds, stream_frames=args.stream_frames)


def run(model: str, *, rounds: int, stream_frames: int) -> None:
    import torch

    from gpu_worker.bootstrap import build_engine
    from gpu_worker.engine import Line, Speaker, token_budget
    from shared.domain.catalog import Language
    from shared.settings import EngineKind, WithoutCuda, WorkerSettings

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "CPU (no CUDA: faster-qwen3-tts eager)"
    print(f"device: {device}; torch {torch.__version__}; model: {model}")
    jitter = random.Random(7)
    lines = [Line(text=s, language=Language.ENGLISH, voice=Speaker(name="Ryan")) for s in SENTENCES]

    for kind in (EngineKind.QWEN, EngineKind.FASTER):
        settings = WorkerSettings(
            models=(model,),
            engine=kind,
            without_cuda=WithoutCuda.EAGER,
            stream_frames=stream_frames,
        )

        started = time.perf_counter()
        engine = build_engine(settings, source=model)
        engine.load()
        load_s = time.perf_counter() - started
        print(
            f"\n== {kind}: {type(engine).__name__} on {engine.device}, "
            f"loaded and warmed in {load_s:.1f} s"
        )

        # One unmeasured pass of each path first: both libraries (and, without CUDA, the eager
        # graphs' masks) do first-use work that belongs to neither side of the ratio.
        for i, line in enumerate(lines):
            torch.manual_seed(i)
            engine.synthesize([line], max_new_tokens=token_budget(line.text, cap=2048))
            stream_once(synthesizer(engine, settings, batch_size=1), line, seed=i)

        # -- bare and ours, one at a time, interleaved in random order --------------------------
        one = synthesizer(engine, settings, batch_size=1)
        times: dict[str, tuple[list[float], list[float]]] = {"bare": ([], []), "ours": ([], [])}
        for r in range(rounds):
            for i, line in enumerate(lines):
                for path in jitter.sample(sorted(times), 2):
                    t0 = time.perf_counter()
                    if path == "bare":
                        first_ms, audio_s = bare_once(
                            engine, line, seed=r * 100 + i, stream_frames=stream_frames
                        )
                    else:
                        first_ms, audio_s = stream_once(one, line, seed=r * 100 + i)
                    times[path][0].append(first_ms)
                    times[path][1].append(audio_s / (time.perf_counter() - t0))
        for path, label in (("bare", "bare call"), ("ours", "stream, concurrency 1")):
            print(stat(f"{label}: first audio", times[path][0], "ms"), end="")
            print(f"   RTF p50 {statistics.median(times[path][1]):6.2f}x")
        (bare_ttfa, bare_rtf), (ours_ttfa, ours_rtf) = times["bare"], times["ours"]
        print(
            f"ratio ours/bare: first audio "
            f"{statistics.median(ours_ttfa) / statistics.median(bare_ttfa):.2f}x, "
            f"RTF {statistics.median(ours_rtf) / statistics.median(bare_rtf):.2f}x"
        )

        # -- ours at higher concurrency (requests wait for the one engine) ----------------------
        for c in CONCURRENCY[1:]:
            ttfa: list[float] = []
            audio_total = wall_total = 0.0
            for r in range(rounds):
                # Every line once per round, c at a time.
                for g in range(0, len(lines), c):
                    t, a, w = concurrently(
                        c,
                        lambda i, g=g, r=r, s=one: stream_once(
                            s, lines[g + i], seed=r * 100 + g + i
                        ),
                    )
                    ttfa += t
                    audio_total += a
                    wall_total += w
            print(stat(f"stream, concurrency {c}: first audio", ttfa, "ms"), end="")
            print(f"   RTF all {audio_total / wall_total:6.2f}x")

        # -- batched against one at a time, interleaved --------------------------------------------
        queues = {bound: synthesizer(engine, settings, batch_size=bound) for bound in (8, 1)}
        made = {bound: [0.0, 0.0] for bound in queues}
        for _ in range(rounds):
            for bound in jitter.sample(sorted(queues), 2):
                _, a, w = concurrently(8, lambda i, q=queues[bound]: said(q, lines[i]))
                made[bound][0] += a
                made[bound][1] += w
        throughput = {bound: audio / wall for bound, (audio, wall) in made.items()}
        for bound in (8, 1):
            print(f"8 jobs, batch bound {bound}: {throughput[bound]:6.2f} s of audio per second")
        print(f"ratio batched/one at a time: {throughput[8] / throughput[1]:.2f}x")


def bare_once(engine: Any, line: Any, *, seed: int, stream_frames: int) -> tuple[float, float]:
    """The library's own call on the engine's loaded model: (ms to first audio, audio s)."""
    import torch

    from gpu_worker.engine import token_budget
    from gpu_worker.fast_engine import FastEngine

    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {
        "text": line.text, "speaker": line.voice.name, "language": "English",
        "max_new_tokens": token_budget(line.text, cap=2048),
    }  # fmt: skip
    t0 = time.perf_counter()
    first = None
    samples = 0
    rate = 24_000
    if isinstance(engine, FastEngine):
        for chunk, chunk_rate, _ in engine.fast.generate_custom_voice_streaming(
            chunk_size=stream_frames, **kwargs
        ):
            first = first or time.perf_counter()
            samples += len(chunk)
            rate = chunk_rate
    else:
        wavs, rate = engine.model.generate_custom_voice(**kwargs)
        first = time.perf_counter()
        samples = len(wavs[0])
    return ((first or t0) - t0) * 1000, samples / rate


def synthesizer(engine: Any, settings: Any, *, batch_size: int) -> Any:
    from gpu_worker.synthesizer import Synthesizer

    return Synthesizer(
        engine=engine,
        max_new_tokens=settings.max_new_tokens,
        batch_size=batch_size,
        batch_window_s=0.05,
    )


def stream_once(synth: Any, line: Any, *, seed: int) -> tuple[float, float]:
    """(ms to the first piece, seconds of audio)"""
    t0 = time.perf_counter()
    first = None
    audio = 0.0
    for piece in synth.stream(line, seed=seed):
        first = first or time.perf_counter()
        audio += piece.duration_s
    return ((first or t0) - t0) * 1000, audio


def said(synth: Any, line: Any) -> tuple[float, float]:
    (wave,) = synth.queue.submit([line])
    if isinstance(wave, Exception):
        raise wave
    return 0.0, float(wave.duration_s)


def concurrently(
    n: int, job: Callable[[int], tuple[float, float]]
) -> tuple[list[float], float, float]:
    """Run ``job(i)`` on n threads at once: (first-audio times, audio seconds, wall seconds)."""
    results: list[tuple[float, float]] = [(0.0, 0.0)] * n
    barrier = threading.Barrier(n + 1)

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = job(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return [r[0] for r in results], sum(r[1] for r in results), wall


def stat(name: str, xs: list[float], unit: str) -> str:
    p90 = sorted(xs)[max(0, round(0.9 * len(xs)) - 1)]
    return (
        f"{name:<40} n={len(xs):<3} p50={statistics.median(xs):9.2f} {unit}  p90={p90:9.2f} {unit}"
    )


if __name__ == "__main__":
    main()
