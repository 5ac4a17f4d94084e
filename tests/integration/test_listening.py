"""The listening models through qwen-asr's real code path, on tiny random models built offline:
Qwen3-ASR transcribes a batch, Qwen3-ForcedAligner times a text's words.

The models are noise (random weights), so the tests hold the plumbing to account, not the
words: one transcript per wave, and word timings that are valid whatever the model said.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from gpu_worker.audio.encoding import Waveform
from gpu_worker.tiny_asr import TinyListener, build_tiny_asr
from gpu_worker.verify.listening import Aligner, Transcriber, ordered_timings, token_budget
from shared.domain.catalog import Language
from shared.domain.errors import ModelLoadError


@pytest.fixture(scope="session")
def transcriber(tiny_listeners_dir: dict[TinyListener, Path]) -> Transcriber:
    return Transcriber.load(str(tiny_listeners_dir[TinyListener.ASR]), device="cpu")


@pytest.fixture(scope="session")
def aligner(tiny_listeners_dir: dict[TinyListener, Path]) -> Aligner:
    return Aligner.load(str(tiny_listeners_dir[TinyListener.ALIGNER]), device="cpu")


def _tone(seconds: float, *, rate: int, hz: float) -> Waveform:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(int(hz)).normal(0.0, 0.05, t.size)
    samples = 0.3 * np.sin(2 * math.pi * hz * t) + noise
    return Waveform(samples=samples.astype(np.float32), sample_rate=rate)


def test_the_builder_reuses_a_complete_directory(
    tiny_listeners_dir: dict[TinyListener, Path],
) -> None:
    path = tiny_listeners_dir[TinyListener.ASR]
    before = (path / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_asr(path, kind=TinyListener.ASR) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.parametrize("language", [Language.ENGLISH, Language.AUTO])
def test_a_batch_of_waves_gets_one_transcript_each(
    transcriber: Transcriber, language: Language
) -> None:
    # Different lengths and rates: the 24 kHz one is resampled, the batch padded.
    waves = [_tone(1.0, rate=24000, hz=220.0), _tone(0.6, rate=16000, hz=440.0)]
    transcripts = transcriber.transcribe(waves, language=language)
    assert len(transcripts) == 2
    assert all(isinstance(text, str) for text in transcripts)
    assert any(transcripts)  # random bytes, but said: the model generated and was decoded


def test_no_waves_no_call(transcriber: Transcriber) -> None:
    assert transcriber.transcribe([], language=Language.ENGLISH) == []


@pytest.mark.parametrize(
    ("text", "language", "words"),
    [
        ("The quick brown fox jumps.", Language.ENGLISH, ["The", "quick", "brown", "fox", "jumps"]),
        ("Hello, world: it's late now!", Language.AUTO, ["Hello", "world", "it's", "late", "now"]),
        ("東京に行きます", Language.AUTO, ["東京", "に", "行き", "ます"]),
    ],
)
def test_the_aligner_times_every_word_within_the_wave(
    aligner: Aligner, text: str, language: Language, words: list[str]
) -> None:
    wave = _tone(1.5, rate=24000, hz=180.0)
    timings = aligner.align(wave, text=text, language=language)
    assert [t.word for t in timings] == words
    flat = [s for t in timings for s in (t.start_s, t.end_s)]
    assert flat == sorted(flat)
    assert all(0.0 <= s <= wave.duration_s for s in flat)


def test_text_without_words_is_not_aligned(aligner: Aligner) -> None:
    assert (
        aligner.align(_tone(0.5, rate=16000, hz=300.0), text=" ... !", language=Language.AUTO) == ()
    )


def test_timings_are_made_valid_whatever_the_model_said() -> None:
    raw = [
        ("a", 0.5, 0.2),  # ends before it starts
        ("b", 0.1, 0.3),  # starts before the word before it ends
        ("", 0.4, 0.5),  # no word
        ("c", float("nan"), 9.0),  # not a number; past the end
        ("d", -1.0, 1.5),  # before the start, then past the end
    ]
    timings = ordered_timings(raw, duration_s=1.0)
    assert [(t.word, t.start_s, t.end_s) for t in timings] == [
        ("a", 0.5, 0.5),
        ("b", 0.5, 0.5),
        ("c", 0.5, 1.0),
        ("d", 1.0, 1.0),
    ]


def test_the_token_budget_grows_with_the_audio() -> None:
    assert token_budget(0.0) < token_budget(1.0) < token_budget(10.0)


def test_a_missing_model_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="TTS_WORKER__VERIFY__ASR_MODEL"):
        Transcriber.load(str(tmp_path / "nothing-here"), device="cpu")


def test_loading_the_listeners_leaves_subnormal_numbers_alone(transcriber: Transcriber) -> None:
    """qwen-asr's import loads a library built with -ffast-math, which switches the thread to
    flushing subnormal numbers to zero (hypothesis refuses to draw floats after it)."""
    smallest_normal = 2.2250738585072014e-308
    assert smallest_normal / 2 > 0
