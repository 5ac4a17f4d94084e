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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Protocol

import numpy as np
import numpy.typing as npt

from gpu_worker.audio.encoding import Waveform
from shared.domain.backends import EngineInfo, ModelFacts
from shared.domain.catalog import Language
from shared.domain.errors import PromptTooLong
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
    voice_id: str | None = None
    """The saved voice the prompt is, for messages; ``None``: a reference given inline."""


Voice = Speaker | Design | Clone


@dataclass(frozen=True, kw_only=True)
class Line:
    """One utterance: what to say, in which language, with which voice."""

    text: str
    language: Language
    voice: Voice
    max_new_tokens: int | None = None
    """This line's own cap. On a request, the caller's: audio cut at it is what was asked for,
    not a runaway. On a line an engine is given, ``Synthesizer`` has set it to the line's own
    bound (its text's token budget, or the caller's lower cap): an engine that generates line
    by line stops each line there (``line_budget``); one whose library takes one value per call
    gives the whole call its ``max_new_tokens``, and ``Synthesizer`` cuts each line's audio."""


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
        """Raise ``PromptTooLong`` when ``line``'s voice prompt is longer than the engine takes
        (``TTS_WORKER__MAX_PROMPT_TOKENS``), or its prompt and ``max_new_tokens`` cannot both
        fit the engine's sequence length; measured before anything reaches the model."""
        ...

    def synthesize(self, lines: Sequence[Line], *, max_new_tokens: int) -> list[Waveform]:
        """Every line (all with one kind of voice), in order, at most ``max_new_tokens`` frames
        each, and at most its own ``max_new_tokens`` where the engine can stop each line on its
        own (``line_budget``); as one list call where the engine can batch."""
        ...

    def stream(self, line: Line, *, max_new_tokens: int) -> Iterator[Waveform]:
        """``line`` in consecutive pieces, each as soon as it is made."""
        ...

    def create_voice_prompt(
        self, *, reference: Waveform, ref_text: str | None, x_vector_only: bool
    ) -> tuple[PromptItem, ...]: ...

    def speaker_embedding(self, wave: Waveform) -> npt.NDArray[np.float32]:
        """The speaker encoder's embedding of ``wave`` (a Base model's; what a clone prompt
        holds as ``ref_spk_embedding``): how alike two voices sound is their cosine."""
        ...


def engine_info(engine: object) -> EngineInfo:
    """Which implementation ``engine`` is (its class's ``NAME`` and ``LIBRARY``) and that
    library's version as installed; another class is named by itself."""
    kind = type(engine)
    library: str | None = getattr(kind, "LIBRARY", None)
    version = None
    if library is not None:
        try:
            version = metadata.version(library)
        except metadata.PackageNotFoundError:
            version = None
    return EngineInfo(name=getattr(kind, "NAME", kind.__name__), library=library, version=version)


def line_budget(line: Line, *, max_new_tokens: int) -> int:
    """The frames ``line`` may have in a call given ``max_new_tokens``: its own cap, if lower."""
    own = line.max_new_tokens
    return max_new_tokens if own is None else max(1, min(own, max_new_tokens))


def check_prompt_length(voice: Clone, *, limit: int, text_tokens: Callable[[str], int]) -> None:
    """Refuse a voice prompt of more than ``limit`` tokens (``TTS_WORKER__MAX_PROMPT_TOKENS``):
    its reference code frames plus, in-context, its reference text's tokens. Both engines
    prefill the whole of it, and decode the frames again before the new audio, so a file of a
    million codes would be gigabytes of cache. The frames are counted first: such a file is
    refused before its text is even tokenized."""
    item = voice.prompt.items[0]  # the item a voice speaks with
    frames = 0 if item.ref_code is None else int(item.ref_code.shape[0])
    text = text_tokens(item.ref_text) if frames <= limit and item.icl_mode and item.ref_text else 0
    if frames + text <= limit:
        return
    who = f"voice {voice.voice_id}" if voice.voice_id else "the reference audio"
    parts = f"{frames} reference frames" + (f" and {text} reference-text tokens" if text else "")
    raise PromptTooLong(
        f"{who} makes a prompt of {frames + text} tokens ({parts}), more than the {limit} this "
        f"worker takes (TTS_WORKER__MAX_PROMPT_TOKENS, about {limit / CODEC_FRAME_RATE_HZ:.0f} s "
        "of reference): make the voice again from a shorter reference",
        field="voice",
        details={
            "voice_id": voice.voice_id,
            "prompt_tokens": frames + text,
            "max_prompt_tokens": limit,
        },
    )


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
