"""What checking a job's audio costs, per second of audio, against making it.

On this machine's CPU, with the tiny models (``gpu_worker.tiny_model``, ``gpu_worker.tiny_asr``)
and one thread, as the tests run them:
- bare: the tiny TTS model saying a line (its cost per second of the audio it made), and an
  MP3 encode of the same audio: the two primitives every job pays;
- signal: the five signal checks on speech-like audio;
- voice: the Base model's speaker encoder on the chunk (the voice check);
- asr: Qwen3-ASR transcribing the chunk (the intelligibility check), with the worker's token
  bound for its length;
- align: Qwen3-ForcedAligner timing the chunk's words.

The tiny models are a few dozen units wide: their figures show the code path's overhead, not a
real model's; the real models' cost follows from their published figures (see the issue notes).
Prints each p50 in ms per second of audio and its ratio to the bare synthesis.
Usage: python bench/verify.py [--n N] [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

TEXT = "The lighthouse keeper climbed the stairs once more before the storm came in."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the checked chunk")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from gpu_worker.audio.encoding import Waveform, encode
    from gpu_worker.engine import Line, Speaker
    from gpu_worker.qwen_engine import QwenEngine
    from gpu_worker.tiny_asr import TinyListener, build_tiny_asr
    from gpu_worker.tiny_model import build_tiny_model
    from gpu_worker.verify.listening import Aligner, Transcriber
    from gpu_worker.verify.signal import measure_signal
    from shared.domain.audio_formats import AudioFormat
    from shared.domain.catalog import Language
    from shared.domain.modes import ModelType
    from shared.settings import VerifySettings
    from tests.support.signals import RATE, speech

    root = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    speaker = QwenEngine(
        model_source=str(build_tiny_model(root / "cv", model_type=ModelType.CUSTOM_VOICE)),
        max_prompt_tokens=1100,
        device="cpu",
    )
    base = QwenEngine(
        model_source=str(build_tiny_model(root / "base", model_type=ModelType.BASE)),
        max_prompt_tokens=1100,
        device="cpu",
    )
    asr = Transcriber.load(str(build_tiny_asr(root / "asr", kind=TinyListener.ASR)), device="cpu")
    aligner = Aligner.load(
        str(build_tiny_asr(root / "aligner", kind=TinyListener.ALIGNER)), device="cpu"
    )
    speaker.load()
    base.load()

    line = Line(text=TEXT, language=Language.ENGLISH, voice=Speaker(name="ryan"))
    chunk = Waveform(samples=speech(args.seconds), sample_rate=RATE)
    bounds = VerifySettings()
    said: list[float] = []

    def synthesize() -> None:
        (wave,) = speaker.synthesize([line], max_new_tokens=64)
        said.append(wave.duration_s)

    cases: dict[str, tuple[Callable[[], object], Callable[[], float]]] = {
        "bare tts": (synthesize, lambda: said[-1]),
        "bare mp3": (lambda: encode(chunk, fmt=AudioFormat.MP3), lambda: args.seconds),
        "signal": (
            lambda: measure_signal(chunk, text=TEXT, target_lufs=-18.0, bounds=bounds),
            lambda: args.seconds,
        ),
        "voice": (lambda: base.speaker_embedding(chunk), lambda: args.seconds),
        "asr": (
            lambda: asr.transcribe([chunk], language=Language.ENGLISH),
            lambda: args.seconds,
        ),
        "align": (
            lambda: aligner.align(chunk, text=TEXT, language=Language.ENGLISH),
            lambda: args.seconds,
        ),
    }
    per_second: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.n):  # interleaved, so drift on a busy machine hits every case alike
        for name, (run, seconds) in cases.items():
            started = time.perf_counter()
            run()
            per_second[name].append((time.perf_counter() - started) * 1000 / seconds())
    p50 = {name: statistics.median(values) for name, values in per_second.items()}
    bare = p50["bare tts"]
    print(f"chunk {args.seconds:g} s, n={args.n}, CPU, one thread, tiny models")
    for name, value in p50.items():
        print(f"{name:<9} p50={value:9.2f} ms per audio second   x{value / bare:7.3f} of bare tts")
    checks = p50["signal"] + p50["voice"] + p50["asr"] + p50["align"]
    print(f"all checks: {checks:.2f} ms per audio second   x{checks / bare:.3f} of bare tts")


if __name__ == "__main__":
    main()
