"""Audio that checks itself: what a worker measured of each chunk it made, and the words' times.

A worker that verifies a job measures every chunk (sentence group) it synthesized: signal
checks (length for the text, silences, clipping, loudness, repeated frames), intelligibility
(an ASR transcript against the text) and voice (speaker similarity to the voice's reference or
to the job's first chunk). A chunk that fails a check is said again with the next seed, up to a
bound; if no attempt passes, the best is kept and the report says so. The report is stored with
the job's result; word timings (from a forced aligner, or none) become captions.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Check(StrEnum):
    """One measure of a chunk; its name in settings and in the report."""

    DURATION = "duration"
    """Seconds per character of text, within the language's bounds: too short means words
    were dropped, too long means the model babbled or paused."""
    SILENCE = "silence"
    """The longest stretch of silence at the start, end or inside the chunk, in seconds."""
    CLIPPING = "clipping"
    """The fraction of samples at full scale."""
    LOUDNESS = "loudness"
    """How far the chunk's integrated loudness (LUFS) is from the job's target, in dB."""
    REPETITION = "repetition"
    """The longest block of frames that repeats an earlier block, in seconds (a model stuck
    in a loop says the same syllables again and again)."""
    INTELLIGIBILITY = "intelligibility"
    """Character error rate of an ASR transcript against the chunk's text, normalised."""
    VOICE = "voice"
    """Cosine similarity of the chunk's speaker embedding to the reference's."""


SIGNAL_CHECKS: tuple[Check, ...] = (
    Check.DURATION,
    Check.SILENCE,
    Check.CLIPPING,
    Check.LOUDNESS,
    Check.REPETITION,
)
"""What any worker can measure: numpy on the waveform, no model."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Measure(_Frozen):
    """One check of one attempt: the value measured and the bound it was held to."""

    check: Check
    value: float
    bound: float
    """An upper bound, except for ``voice`` (a lower one) and ``duration``'s lower side,
    which ``low`` carries."""
    low: float | None = None
    """The lower bound, where the check has one (duration)."""
    passed: bool


class ChunkAttempt(_Frozen):
    """One synthesis of a chunk and what it measured."""

    seed: int | None
    """The seed it was said with; ``None`` for an unseeded first attempt (said in a batch)."""
    duration_s: float
    measures: tuple[Measure, ...]
    transcript: str | None = None
    """What the ASR heard, where intelligibility was checked."""

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.measures)

    @property
    def failures(self) -> int:
        return sum(not m.passed for m in self.measures)

    def measure(self, check: Check) -> Measure | None:
        return next((m for m in self.measures if m.check is check), None)


class ChunkReport(_Frozen):
    """A chunk's text, every attempt at it, and which one the audio kept."""

    index: int = Field(ge=0)
    text: str
    attempts: tuple[ChunkAttempt, ...] = Field(min_length=1)
    kept: int = Field(ge=0)
    """The index into ``attempts`` of the audio the job kept."""

    @model_validator(mode="after")
    def _kept_is_an_attempt(self) -> Self:
        if self.kept >= len(self.attempts):
            raise ValueError(f"kept attempt {self.kept} of {len(self.attempts)}")
        return self

    @property
    def passed(self) -> bool:
        return self.attempts[self.kept].passed

    @property
    def remade(self) -> bool:
        return len(self.attempts) > 1


class VerifyReport(_Frozen):
    """Every chunk of one job's audio, as checked."""

    checks: tuple[Check, ...]
    """What was measured (a worker without an ASR model measures no intelligibility)."""
    chunks: tuple[ChunkReport, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.chunks)

    @property
    def remade(self) -> int:
        return sum(c.remade for c in self.chunks)

    @property
    def below_threshold(self) -> tuple[int, ...]:
        """The chunks whose kept audio still fails a check."""
        return tuple(c.index for c in self.chunks if not c.passed)


class WordTiming(_Frozen):
    """One word of the text and when it is said, in seconds from the start of the audio."""

    word: str = Field(min_length=1)
    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end_s < self.start_s:
            raise ValueError(f"word {self.word!r} ends ({self.end_s}) before it starts")
        return self

    def shifted(self, offset_s: float) -> WordTiming:
        return WordTiming(
            word=self.word, start_s=self.start_s + offset_s, end_s=self.end_s + offset_s
        )
