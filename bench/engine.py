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
  (eight threads submitting together) and at 1;
- streamed jobs whose every part upload takes ``--upload-ms`` (200 ms): the engine's busy
  fraction (time inside its generation calls over the run's wall time, ``--stream-jobs`` jobs
  at once through ``TaskExecutor``) with each piece stretched, encoded and uploaded inline
  under the engine's lock (before: ``TTS_WORKER__STREAM_PIPELINE=false``) and on the job's
  upload stage (after), each as a ratio to the same jobs with instant uploads.

Real-time factor > 1 is faster than real time. The tiny model is a few dozen units wide: its
figures say what our layers cost around the library, not what a GPU does with the real model.
Usage: python bench/engine.py [--model DIR] [--rounds N] [--stream-frames N] [--upload-ms MS]
                              [--stream-jobs N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
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
    parser.add_argument("--upload-ms", type=float, default=200.0)
    parser.add_argument("--stream-jobs", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            from gpu_worker.tiny_model import build_tiny_model

            model = str(build_tiny_model(Path(scratch) / "custom_voice"))
        run(
            model,
            rounds=args.rounds,
            stream_frames=args.stream_frames,
            upload_s=args.upload_ms / 1000,
            stream_jobs=args.stream_jobs,
        )


def run(model: str, *, rounds: int, stream_frames: int, upload_s: float, stream_jobs: int) -> None:
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

        slow_uploads(engine, settings, rounds=rounds, upload_s=upload_s, jobs=stream_jobs)


def slow_uploads(engine: Any, settings: Any, *, rounds: int, upload_s: float, jobs: int) -> None:
    """The engine's busy fraction while ``jobs`` streamed jobs run at once, their uploads taking
    ``upload_s`` a part: inline (under the lock) and on the upload stage, against instant."""
    from gpu_worker.pipeline import StageConfig
    from gpu_worker.synthesizer import ModelSet
    from gpu_worker.tasks import Task, TaskExecutor
    from shared.domain.audio_formats import AudioFormat
    from shared.domain.synthesis import CustomVoiceRequest
    from shared.settings import VoiceSettings

    timed = TimedEngine(engine)
    models = ModelSet([synthesizer(timed, settings, batch_size=1)])
    ms = f"{upload_s * 1000:g} ms"
    modes = {
        "instant": (StageConfig.of(settings), 0.0),
        "before": (replace(StageConfig.of(settings), inline=True), upload_s),
        "after": (StageConfig.of(settings), upload_s),
    }
    labels = {
        "instant": "uploads instant, upload stage",
        "before": f"uploads {ms}, inline under the lock",
        "after": f"uploads {ms}, upload stage",
    }
    text = " ".join(SENTENCES)
    busy: dict[str, list[float]] = {mode: [] for mode in modes}
    parts: dict[str, int] = dict.fromkeys(modes, 0)
    order = random.Random(11)
    for r in range(rounds):
        for mode in order.sample(sorted(modes), len(modes)):
            stage, delay = modes[mode]
            io = SlowUploads(delay)
            executor = TaskExecutor(
                models=models,
                io=io,
                limits=VoiceSettings(),
                max_chunk_chars=60,  # a sentence a chunk: several lines per job
                max_join_s=3600,
                stream=stage,
            )

            def job(
                i: int, r: int = r, mode: str = mode, executor: Any = executor
            ) -> tuple[float, float]:
                # The same seeds in every mode: the same audio, so the same engine work.
                request = CustomVoiceRequest(
                    text=text, speaker="ryan", stream=True, seed=r * 100 + i,
                    format=AudioFormat.MP3,
                )  # fmt: skip
                task = Task(id=f"bench-{mode}-{r}-{i}", owner="bench", request=request, attempt=1)
                output = executor.execute(task)
                return 0.0, float(output.audio.duration_s if output.audio else 0.0)

            timed.busy_s = 0.0
            _, _, wall = concurrently(jobs, job)
            busy[mode].append(timed.busy_s / wall)
            parts[mode] += io.parts
    print(f"\n{jobs} streamed jobs at once, {len(SENTENCES)} lines each, MP3:")
    for mode in modes:
        print(
            f"{labels[mode]:<45} engine busy p50 {statistics.median(busy[mode]):5.2f} "
            f"(min {min(busy[mode]):.2f})   parts {parts[mode] // rounds}"
        )
    reference = statistics.median(busy["instant"])
    for mode in ("before", "after"):
        print(
            f"ratio busy {mode}/instant: {statistics.median(busy[mode]) / reference:.2f}x "
            f"({labels[mode]})"
        )


class TimedEngine:
    """An engine whose generation time (each piece's making, and the fit check) is summed:
    the time the GPU, here the CPU, works for the jobs."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self.busy_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def check_fits(self, line: Any, *, max_new_tokens: int) -> None:
        t0 = time.perf_counter()
        try:
            self._engine.check_fits(line, max_new_tokens=max_new_tokens)
        finally:
            self._count(time.perf_counter() - t0)

    def stream(self, line: Any, *, max_new_tokens: int) -> Iterator[Any]:
        pieces = self._engine.stream(line, max_new_tokens=max_new_tokens)
        while True:
            t0 = time.perf_counter()
            piece = next(pieces, None)
            self._count(time.perf_counter() - t0)
            if piece is None:
                return
            yield piece

    def _count(self, seconds: float) -> None:
        with self._lock:
            self.busy_s += seconds


class SlowUploads:
    """A ``TaskIO`` whose every part upload takes ``delay_s`` (a sleep: no CPU, like a
    network wait) and whose stores are instant."""

    def __init__(self, delay_s: float) -> None:
        self._delay_s = delay_s
        self._lock = threading.Lock()
        self.parts = 0

    max_parts = None

    def publish_part(self, task: Any, *, index: int, data: bytes, fmt: Any) -> None:
        time.sleep(self._delay_s)
        with self._lock:
            self.parts += 1

    def store_audio(self, task: Any, audio: Any, *, parts: int) -> Any:
        from shared.domain.jobs import AudioResult

        return AudioResult(
            uri=f"gs://bench/{task.id}", format=audio.format, content_type=audio.content_type,
            sample_rate=audio.sample_rate, duration_s=audio.duration_s, bytes=len(audio.data),
            parts=parts,
        )  # fmt: skip

    def still_wanted(self, task: Any) -> bool:
        return True

    # Streamed speech by a built-in speaker reads nothing and writes no voice.
    def reference(self, ref: Any) -> bytes:
        raise NotImplementedError

    def prompt(self, voice_id: str) -> Any:
        raise NotImplementedError

    def join_source(self, source: Any, *, index: int) -> bytes:
        raise NotImplementedError

    def publish_voice(self, task: Any, voice: Any) -> str:
        raise NotImplementedError


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
