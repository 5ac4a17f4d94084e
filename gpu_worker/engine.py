"""The engine interface: what every Qwen3-TTS implementation offers the worker.

An engine owns one model, loaded once, and makes the bare model calls with keyword-only,
typed arguments. Two implement it: ``QwenEngine`` (qwen-tts itself, ``qwen_engine.py``) and
``FastEngine`` (faster-qwen3-tts, CUDA graphs, ``fast_engine.py``); ``TTS_WORKER__ENGINE``
picks one. Nothing here budgets tokens, seeds, locks or translates errors: ``Synthesizer``
(``synthesizer.py``) does that once, above every engine.

Keyword-only methods make argument-order and bytes-vs-base64 bugs impossible to write: every
value is named, and typed as what it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gpu_worker.audio.encoding import Waveform
from shared.domain.backends import ModelFacts
from shared.domain.catalog import Language
from shared.domain.modes import ModelType
from shared.domain.voice_file import CODEC_FRAME_RATE_HZ as CODEC_FRAME_RATE_HZ
from shared.domain.voice_file import PromptItem, VoicePromptFile

# CODEC_FRAME_RATE_HZ: the "12 Hz" speech tokenizer emits 12.5 frames a second, one generated
# token per frame; defined beside the prompt files, whose codes count the same frames.
MIN_BUDGET_S = 4.0
SECONDS_PER_CHAR = 0.35
"""Generous for Chinese (about 4 characters a second) and very generous for alphabetic text."""


def token_budget(text: str, *, cap: int) -> int:
    """Bound ``max_new_tokens`` by the text: short text can fail to emit its stop token."""
    seconds = MIN_BUDGET_S + SECONDS_PER_CHAR * len(text)
    return max(1, min(cap, math.ceil(seconds * CODEC_FRAME_RATE_HZ)))


@dataclass(frozen=True, kw_only=True)
class Speaker:
    """A built-in speaker of a CustomVoice model, perhaps told how to speak."""

    name: str
    instruct: str | None = None


@dataclass(frozen=True, kw_only=True)
class Design:
    """A voice described in words (VoiceDesign model)."""

    instruct: str


@dataclass(frozen=True, kw_only=True)
class Clone:
    """A cloned voice: a prompt made from reference audio (Base model); it speaks with the
    file's first item."""

    prompt: VoicePromptFile = field(compare=False)


Voice = Speaker | Design | Clone


@dataclass(frozen=True, kw_only=True)
class Line:
    """One utterance: what to say, in which language, with which voice."""

    text: str
    language: Language
    voice: Voice
    max_new_tokens: int | None = None
    """The caller's own cap: audio cut at it is what was asked for, not a runaway."""


class Engine(Protocol):
    """One model behind one implementation. ``Synthesizer`` calls one method at a time."""

    @property
    def model_source(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def model_type(self) -> ModelType: ...

    @property
    def facts(self) -> ModelFacts:
        """What the loaded model accepts in a voice prompt, read from its own config."""
        ...

    def load(self) -> None:
        """Load the weights and warm up (capture graphs) once; idempotent and thread-safe."""
        ...

    def check_fits(self, line: Line, *, max_new_tokens: int) -> None:
        """Raise ``PromptTooLong`` when ``line``'s prompt and ``max_new_tokens`` cannot both fit
        the engine's sequence length."""
        ...

    def synthesize(self, lines: Sequence[Line], *, max_new_tokens: int) -> list[Waveform]:
        """Every line (all with one kind of voice), in order, at most ``max_new_tokens`` frames
        each; as one list call where the engine can batch."""
        ...

    def stream(self, line: Line, *, max_new_tokens: int) -> Iterator[Waveform]:
        """``line`` in consecutive pieces, each as soon as it is made."""
        ...

    def create_voice_prompt(
        self, *, reference: Waveform, ref_text: str | None, x_vector_only: bool
    ) -> tuple[PromptItem, ...]: ...


def model_language(language: Language) -> str:
    """qwen-tts spells languages capitalised ("English", "Auto")."""
    return language.value.capitalize()


def same_voice_kind(lines: Sequence[Line]) -> type[Voice]:
    """The one kind of voice a batch has: one generate method serves it."""
    kinds = {type(line.voice) for line in lines}
    if len(kinds) != 1:
        raise ValueError(
            f"a batch needs one kind of voice, got {sorted(k.__name__ for k in kinds)}"
        )
    return kinds.pop()
