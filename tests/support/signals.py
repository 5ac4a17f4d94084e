"""Real signals for the audio checks, made in the test: a speech-like voice (a gliding harmonic
tone, syllable by syllable, with a little breath noise), and the faults long-form TTS is known
for cut into it. An engine that speaks it, and turns bad for the seeds a test names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from gpu_worker.audio.encoding import EncodedAudio, Waveform
from gpu_worker.engine import Line
from gpu_worker.tasks import Task
from shared.domain.audio_formats import AudioFormat
from shared.domain.backends import ModelFacts
from shared.domain.jobs import AudioResult
from shared.domain.modes import ModelType
from shared.domain.synthesis import AudioRef, JoinSource
from shared.domain.voice_file import VoicePromptFile
from tests.support.fake_engine import FakeEngine

RATE = 24_000
SECONDS_PER_CHAR = 0.075
"""About how long a letter takes to say in English."""

Samples = npt.NDArray[np.float32]
FACTS = ModelFacts(
    model="seeded", model_type=ModelType.CUSTOM_VOICE, codebook_size=2048, num_code_groups=16
)


def speech(seconds: float, *, seed: int = 0, pitch_hz: float = 120.0) -> Samples:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    glide = pitch_hz + 25 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(glide) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 16))
    syllables = np.abs(np.sin(2 * np.pi * 3.1 * t + rng.uniform(0, np.pi)))
    breath = np.convolve(rng.standard_normal(t.size), np.ones(240) / 240, "same")
    wave = 0.12 * voiced * syllables * (1 + 4 * breath) + 0.004 * rng.standard_normal(t.size)
    return np.clip(wave, -0.9, 0.9).astype(np.float32)


def for_text(text: str, *, seed: int = 0) -> Samples:
    letters = sum(ch.isalnum() for ch in text)
    return speech(max(0.3, letters * SECONDS_PER_CHAR), seed=seed)


def silence(seconds: float) -> Samples:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def with_gap(wave: Samples, *, seconds: float) -> Samples:
    half = wave.size // 2
    return np.concatenate([wave[:half], silence(seconds), wave[half:]])


def clipped(wave: Samples) -> Samples:
    return np.clip(wave * 6, -1.0, 1.0).astype(np.float32)


def looped(wave: Samples, *, block_s: float, times: int) -> Samples:
    """A model stuck in a loop: one block said ``times`` over, inside the speech."""
    start = wave.size // 3
    block = wave[start : start + int(block_s * RATE)]
    return np.concatenate([wave[:start], *([block] * times), wave[start:]])


def wave_of(samples: Samples) -> Waveform:
    return Waveform(samples=samples, sample_rate=RATE)


@dataclass
class SeededEngine(FakeEngine):
    """A model whose audio depends on the seed it is said with: speech sized to the text, or,
    for the seeds in ``bad_seeds`` (and every seed when ``always_bad``), a chunk cut off after
    a few syllables. It is its own speaker encoder too (a wave's share of energy in a few
    bands), so every chunk it makes sounds like one voice."""

    bad_seeds: set[int] = field(default_factory=set)
    always_bad: bool = False
    said: list[tuple[str, int]] = field(default_factory=list)
    embedded: int = 0
    """Speaker embeddings it was asked for."""
    model_type: ModelType = ModelType.CUSTOM_VOICE
    facts: ModelFacts = field(default_factory=lambda: FACTS)
    model_source: str = "seeded"
    device: str = "cpu"

    def synthesize(self, lines: Sequence[Line], *, max_new_tokens: int) -> list[Waveform]:
        seed = torch.initial_seed()
        waves = []
        for line in lines:
            self.said.append((line.text, seed))
            audio = for_text(line.text, seed=seed % 1000)
            if self.always_bad or seed in self.bad_seeds:
                audio = audio[: int(0.3 * RATE)]  # words dropped
            waves.append(wave_of(audio))
        return waves

    def speaker_embedding(self, wave: Waveform) -> npt.NDArray[np.float32]:
        self.embedded += 1
        spectrum = np.abs(np.fft.rfft(wave.samples[: RATE // 2], n=RATE // 2))
        bands = np.add.reduceat(spectrum, [0, 50, 100, 200])
        return np.asarray(bands / max(float(bands.sum()), 1e-9), dtype=np.float32)


@dataclass
class MemoryIO:
    """A ``TaskIO`` that keeps what a task stores in memory."""

    stored: list[EncodedAudio] = field(default_factory=list)
    parts: list[bytes] = field(default_factory=list)

    def reference(self, ref: AudioRef) -> bytes:
        raise AssertionError("no references here")

    def prompt(self, voice_id: str) -> VoicePromptFile:
        raise AssertionError("no prompts here")

    def store_audio(self, task: Task, audio: EncodedAudio, *, parts: int) -> AudioResult:
        self.stored.append(audio)
        return AudioResult(
            uri=f"memory://{task.id}/{task.attempt}",
            format=audio.format,
            content_type=audio.content_type,
            sample_rate=audio.sample_rate,
            duration_s=audio.duration_s,
            bytes=len(audio.data),
            parts=parts,
        )

    def publish_part(self, task: Task, *, index: int, data: bytes, fmt: AudioFormat) -> None:
        self.parts.append(data)

    @property
    def max_parts(self) -> int | None:
        return None

    def join_source(self, source: JoinSource, *, index: int) -> bytes:
        raise AssertionError("no joins here")

    def still_wanted(self, task: Task) -> bool:
        return True

    def publish_voice(self, task: Task, voice: object) -> str:
        raise AssertionError("no voices here")
