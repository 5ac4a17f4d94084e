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
"""Each divides len(SENTENCES): a round says every sentence once, that many at a time."""


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
    from gpu_worker.fast_engine import FastEngine
    from gpu_worker.qwen_engine import QwenEngine
    from shared.domain.catalog import Language
    from shared.settings import EngineKind, WithoutCuda, WorkerSettings

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "CPU (no CUDA: faster-qwen3-tts eager)"
    print(f"device: {device}; torch {torch.__version__}; model: {model}")
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

        # -- bare ------------------------------------------------------------------------------
        bare_ttfa: list[float] = []
        bare_rtf: list[float] = []
        for r in range(rounds):
            for i, line in enumerate(lines):
                torch.manual_seed(r * 100 + i)
                assert isinstance(line.voice, Speaker)
                kwargs: dict[str, Any] = {
                    "text": line.text, "speaker": line.voice.name, "language": "English",
                    "max_new_tokens": token_budget(line.text, cap=settings.max_new_tokens),
                }  # fmt: skip
                t0 = time.perf_counter()
                if isinstance(engine, FastEngine):
                    first = None
                    audio = 0
                    rate = 24_000
                    for chunk, chunk_rate, _ in engine.fast.generate_custom_voice_streaming(
                        chunk_size=stream_frames, **kwargs
                    ):
                        first = first or time.perf_counter()
                        audio += len(chunk)
                        rate = chunk_rate
                else:
                    assert isinstance(engine, QwenEngine)
                    wavs, rate = engine.model.generate_custom_voice(**kwargs)
                    first = time.perf_counter()
                    audio = len(wavs[0])
                wall = time.perf_counter() - t0
                bare_ttfa.append(((first or t0) - t0) * 1000)
                bare_rtf.append(audio / rate / wall)
        print(stat("bare: time to first audio", bare_ttfa, "ms"))
        print(stat("bare: real-time factor", bare_rtf, "x"))

        # -- through the synthesizer, streaming, at each concurrency -----------------------------
        one = synthesizer(engine, settings, batch_size=1)
        ours: dict[int, tuple[list[float], float]] = {}
        for c in CONCURRENCY:
            ttfa: list[float] = []
            audio_s = 0.0
            wall = 0.0
            for r in range(rounds):
                # Every line once per round, c at a time, with the seeds the bare calls had.
                for g in range(0, len(lines), c):
                    t, a, w = concurrently(
                        c,
                        lambda i, g=g, r=r, s=one: stream_once(
                            s, lines[g + i], seed=r * 100 + g + i
                        ),
                    )
                    ttfa += t
                    audio_s += a
                    wall += w
            ours[c] = (ttfa, audio_s / wall)
            print(stat(f"stream, concurrency {c}: first audio", ttfa, "ms"), end="")
            print(f"   RTF {audio_s / wall:6.2f}x")
        ttfa1, rtf1 = ours[1]
        print(
            f"ratio at concurrency 1, ours/bare: first audio "
            f"{statistics.median(ttfa1) / statistics.median(bare_ttfa):.2f}x, "
            f"RTF {rtf1 / statistics.median(bare_rtf):.2f}x"
        )

        # -- batched against one at a time -------------------------------------------------------
        throughput = {}
        for bound in (8, 1):
            queued = synthesizer(engine, settings, batch_size=bound)
            audio_s = wall = 0.0
            for _ in range(rounds):
                _, a, w = concurrently(8, lambda i, q=queued: said(q, lines[i]))
                audio_s += a
                wall += w
            throughput[bound] = audio_s / wall
            print(f"8 jobs, batch bound {bound}: {throughput[bound]:6.2f} s of audio per second")
        print(f"ratio batched/one at a time: {throughput[8] / throughput[1]:.2f}x")


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
