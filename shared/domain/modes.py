"""What a job can ask for (its mode) and which model types can do it.

A worker loads at most one model of each type; the modes it offers follow from the types it
loaded, and the router sends a job only where its mode is offered.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Mode(StrEnum):
    CUSTOM_VOICE = "custom_voice"
    """Speak with a built-in speaker."""
    VOICE_DESIGN = "voice_design"
    """Speak with a voice described in words."""
    VOICE_CLONE = "voice_clone"
    """Speak with the voice of an uploaded clip."""
    CLONE_PROMPT = "clone_prompt"
    """Speak with a registered voice."""
    CREATE_VOICE = "create_voice"
    """Build and register a voice from an uploaded clip."""
    DESIGN_VOICE = "design_voice"
    """Casting: design a voice, then lock it as a registered one."""
    NORMALIZE = "normalize"
    """Loudness-normalise an uploaded clip."""
    CAST = "cast"
    """The parent of a casting call: bookkeeping, never routed to a worker."""
    BATCH = "batch"
    """The parent of a batch of speech jobs: bookkeeping, never routed to a worker."""
    JOIN = "join"
    """Join a finished batch's audio into one file."""


class ModelType(StrEnum):
    """The released Qwen3-TTS model types (the ``tts_model_type`` of a model's config)."""

    CUSTOM_VOICE = "custom_voice"
    VOICE_DESIGN = "voice_design"
    BASE = "base"


SPEECH_MODES: tuple[Mode, ...] = (
    Mode.CUSTOM_VOICE,
    Mode.VOICE_DESIGN,
    Mode.VOICE_CLONE,
    Mode.CLONE_PROMPT,
)
"""The modes that turn text into audio."""

WORKER_MODES: tuple[Mode, ...] = (
    *SPEECH_MODES,
    Mode.CREATE_VOICE,
    Mode.DESIGN_VOICE,
    Mode.NORMALIZE,
    Mode.JOIN,
)
"""Modes a worker runs; ``cast`` and ``batch`` are bookkeeping and never routed."""

MODES_BY_MODEL_TYPE: dict[ModelType, tuple[Mode, ...]] = {
    ModelType.CUSTOM_VOICE: (Mode.CUSTOM_VOICE,),
    ModelType.VOICE_DESIGN: (Mode.VOICE_DESIGN,),
    ModelType.BASE: (Mode.VOICE_CLONE, Mode.CLONE_PROMPT, Mode.CREATE_VOICE),
}


def modes_offered(model_types: Iterable[ModelType]) -> tuple[Mode, ...]:
    """What a worker with these models can run. ``design_voice`` needs VoiceDesign to speak
    the line and Base to lock it; ``normalize`` and ``join`` need no model at all."""
    loaded = set(model_types)
    offered = {mode for t in loaded for mode in MODES_BY_MODEL_TYPE[t]}
    if {ModelType.VOICE_DESIGN, ModelType.BASE} <= loaded:
        offered.add(Mode.DESIGN_VOICE)
    offered.update({Mode.NORMALIZE, Mode.JOIN})
    return tuple(m for m in WORKER_MODES if m in offered)
