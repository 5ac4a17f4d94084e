"""Every check of a job's chunks, the re-making of those that fail, and the report.

The worker that made the audio checks it (the models that listen share its GPU). What it can
measure depends on what it loaded: the signal checks always; intelligibility with an ASR model
(``TTS_WORKER__VERIFY__ASR_MODEL``); voice with a Base model's speaker encoder; word timings
with a forced aligner. The report names the checks that ran.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import jiwer
import numpy as np
import numpy.typing as npt

from gpu_worker.audio.encoding import Waveform
from gpu_worker.verify.signal import measure_signal
from shared.domain.catalog import Language
from shared.domain.synthesis import MAX_SEED
from shared.domain.verification import (
    SIGNAL_CHECKS,
    Check,
    ChunkAttempt,
    ChunkReport,
    Measure,
    VerifyReport,
    WordTiming,
)
from shared.settings import VerifySettings


class Transcriber(Protocol):
    def transcribe(self, waves: Sequence[Waveform], *, language: Language) -> list[str]:
        """What each wave says, in one batched call."""
        ...


class Aligner(Protocol):
    def align(self, wave: Waveform, *, text: str, language: Language) -> tuple[WordTiming, ...]:
        """When each word of ``text`` is said in ``wave``, in seconds from its start."""
        ...


class SpeakerEncoder(Protocol):
    def speaker_embedding(self, wave: Waveform) -> npt.NDArray[np.float32]: ...


Embedding = npt.NDArray[np.float32]


@dataclass(frozen=True, kw_only=True)
class Listeners:
    """The models a worker loaded to check its audio; each may be absent."""

    transcriber: Transcriber | None = None
    aligner: Aligner | None = None
    encoder: SpeakerEncoder | None = None
    """The worker's Base model: its speaker encoder compares voices."""


@dataclass(frozen=True, kw_only=True)
class Chunk:
    """One chunk to check: its text and the audio made for it."""

    text: str
    wave: Waveform
    seed: int | None


Remake = Callable[[int, int], Waveform]
"""Say chunk ``index`` again with ``seed``."""


class Verifier:
    def __init__(self, *, settings: VerifySettings, listeners: Listeners) -> None:
        self._settings = settings
        self._listeners = listeners

    @property
    def checks(self) -> tuple[Check, ...]:
        """What this worker measures: advertised in its heartbeat, named in every report."""
        extra = (
            *((Check.INTELLIGIBILITY,) if self._listeners.transcriber is not None else ()),
            *((Check.VOICE,) if self._listeners.encoder is not None else ()),
        )
        return (*SIGNAL_CHECKS, *extra)

    @property
    def aligns(self) -> bool:
        return self._listeners.aligner is not None

    def check(
        self,
        chunks: Sequence[Chunk],
        *,
        language: Language,
        target_lufs: float | None,
        reference: Embedding | None,
        remake: Remake | None,
    ) -> tuple[list[Waveform], VerifyReport]:
        """Measure every chunk; say each failing one again with the next seed (``remake``; none
        for audio already streamed to a listener) until it passes or ``max_attempts`` are
        spent. Returns the audio to keep, chunk by chunk, and the report. The voice is held
        to ``reference`` (a clone's prompt); without one (a built-in or designed voice), to
        the job's first chunk, so drift between chunks shows."""
        first_wave = None
        encoder = self._listeners.encoder
        if reference is None and encoder is not None and chunks:
            first_wave = chunks[0].wave
            reference = encoder.speaker_embedding(first_wave)
        first = self._measure(
            chunks,
            language=language,
            target_lufs=target_lufs,
            reference=reference,
            reference_wave=first_wave,
        )
        kept: list[Waveform] = []
        reports: list[ChunkReport] = []
        for index, (chunk, attempt) in enumerate(zip(chunks, first, strict=True)):
            attempts, waves = [attempt], [chunk.wave]
            base = chunk.seed if chunk.seed is not None else secrets.randbelow(MAX_SEED)
            while remake is not None and not attempts[-1].passed:
                if len(attempts) >= self._settings.max_attempts:
                    break
                seed = (base + len(attempts)) % (MAX_SEED + 1)
                wave = remake(index, seed)
                again = Chunk(text=chunk.text, wave=wave, seed=seed)
                attempts += self._measure(
                    [again], language=language, target_lufs=target_lufs, reference=reference
                )
                waves.append(wave)
            best = _best(attempts)
            kept.append(waves[best])
            reports.append(
                ChunkReport(index=index, text=chunk.text, attempts=tuple(attempts), kept=best)
            )
        return kept, VerifyReport(checks=self.checks, chunks=tuple(reports))

    def words(
        self, waves: Sequence[Waveform], *, texts: Sequence[str], language: Language
    ) -> list[tuple[WordTiming, ...]]:
        """Each chunk's words in its own time; empty where the worker has no aligner."""
        aligner = self._listeners.aligner
        if aligner is None:
            return [() for _ in waves]
        return [
            aligner.align(wave, text=text, language=language)
            for wave, text in zip(waves, texts, strict=True)
        ]

    def _measure(
        self,
        chunks: Sequence[Chunk],
        *,
        language: Language,
        target_lufs: float | None,
        reference: Embedding | None,
        reference_wave: Waveform | None = None,
    ) -> list[ChunkAttempt]:
        """``reference_wave``: the wave ``reference`` was taken from, not embedded again."""
        bounds = self._settings
        target = bounds.target_lufs if target_lufs is None else target_lufs
        transcriber = self._listeners.transcriber
        heard: Sequence[str | None] = (
            transcriber.transcribe([c.wave for c in chunks], language=language)
            if transcriber is not None
            else [None] * len(chunks)
        )
        attempts = []
        for chunk, transcript in zip(chunks, heard, strict=True):
            measures = list(
                measure_signal(chunk.wave, text=chunk.text, target_lufs=target, bounds=bounds)
            )
            if transcript is not None:
                measures.append(self._intelligibility(chunk.text, transcript))
            if self._listeners.encoder is not None and reference is not None:
                known = reference if chunk.wave is reference_wave else None
                measures.append(self._voice(chunk.wave, reference, embedding=known))
            attempts.append(
                ChunkAttempt(
                    seed=chunk.seed,
                    duration_s=round(chunk.wave.duration_s, 3),
                    measures=tuple(measures),
                    transcript=transcript,
                )
            )
        return attempts

    def _intelligibility(self, text: str, transcript: str) -> Measure:
        error = character_error_rate(text, transcript)
        bound = self._settings.max_cer
        return Measure(
            check=Check.INTELLIGIBILITY, value=round(error, 4), bound=bound, passed=error <= bound
        )

    def _voice(
        self, wave: Waveform, reference: Embedding, *, embedding: Embedding | None
    ) -> Measure:
        assert self._listeners.encoder is not None
        if embedding is None:
            embedding = self._listeners.encoder.speaker_embedding(wave)
        similarity = cosine(embedding, reference)
        bound = self._settings.min_similarity
        return Measure(
            check=Check.VOICE,
            value=round(similarity, 4),
            bound=bound,
            passed=similarity >= bound,
        )


def place_words(
    words: Sequence[Sequence[WordTiming]],
    *,
    starts_s: Sequence[float],
    scale: float,
    duration_s: float,
) -> tuple[WordTiming, ...]:
    """Each chunk's words moved to where the chunk sits in the whole (its start, and the
    stretch of the speed the job asked for), kept in order, inside the audio and inside their
    own chunk: a word never overlaps the one before it nor runs into the next chunk."""
    placed: list[WordTiming] = []
    floor = 0.0
    limits = [*starts_s[1:], duration_s]
    for chunk, start, limit in zip(words, starts_s, limits, strict=True):
        ceiling = min(limit, duration_s)
        for word in chunk:
            begin = min(max(start + word.start_s * scale, floor), ceiling)
            end = min(max(start + word.end_s * scale, begin), ceiling)
            placed.append(WordTiming(word=word.word, start_s=begin, end_s=end))
            floor = end
    return tuple(placed)


_PUNCTUATION = re.compile(r"[\W_]+", re.UNICODE)


def normalized(text: str) -> str:
    """Compatibility forms folded, case folded, punctuation and symbols dropped, spaces
    collapsed: what an ASR transcript and a text share when they say the same words."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCTUATION.sub(" ", folded).split())


def character_error_rate(text: str, transcript: str) -> float:
    """Edits per character of the text, after normalisation (``jiwer``'s CER); a transcript of
    nothing is all errors, and nothing to say heard as nothing is none."""
    reference, hypothesis = normalized(text), normalized(transcript)
    if not reference:
        return 0.0 if not hypothesis else 1.0
    if not hypothesis:
        return 1.0
    return float(jiwer.cer(reference, hypothesis))


def cosine(a: Embedding, b: Embedding) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a.ravel(), b.ravel()) / norm) if norm else 0.0


def _best(attempts: Sequence[ChunkAttempt]) -> int:
    """The first attempt that passed; else the one with the fewest failed checks, earliest."""
    return min(range(len(attempts)), key=lambda i: (attempts[i].failures, i))
