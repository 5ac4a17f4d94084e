"""OpenAI's speech API as clients send it: ``POST /v1/audio/speech`` and ``GET /v1/models``.

The body takes OpenAI's fields, the extensions vLLM-Omni's Qwen3-TTS server accepts on the same
route (``task_type``, ``language``, ``ref_audio`` / ``ref_text``, ``x_vector_only_mode``,
``max_new_tokens``) and ours (``seed``), so clients of either work unchanged. The core turns it
into one of the native speech bodies; nothing about it is stored as is.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.audio_formats import AudioFormat
from shared.domain.catalog import Language
from shared.domain.synthesis import (
    HARD_MAX_TEXT_CHARS,
    Instruct,
    LanguageName,
    MaxNewTokens,
    RefText,
    Seed,
    Speed,
)
from shared.wire.bodies import Base64Audio


class TaskType(StrEnum):
    """vLLM-Omni's names for the three model types."""

    CUSTOM_VOICE = "CustomVoice"
    VOICE_DESIGN = "VoiceDesign"
    BASE = "Base"


class StreamFormat(StrEnum):
    AUDIO = "audio"
    """The audio bytes, chunked, as they are made."""
    SSE = "sse"
    """Server-sent events: ``speech.audio.delta`` (base64 audio), then ``speech.audio.done``."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class VoiceObject(_Body):
    """OpenAI's object form of a voice: ``{"id": ...}``."""

    id: Annotated[str, Field(min_length=1, max_length=200)]


class SpeechCreateBody(_Body):
    model: Annotated[str, Field(min_length=1, max_length=200)]
    input: Annotated[str, Field(min_length=1, max_length=HARD_MAX_TEXT_CHARS)]
    voice: Annotated[str, Field(min_length=1, max_length=200)] | VoiceObject | None = None
    """A built-in speaker, an OpenAI voice name, or a registered voice's id or name."""
    instructions: Instruct | None = None
    response_format: AudioFormat = AudioFormat.MP3
    speed: Speed = 1.0
    stream_format: StreamFormat | None = None
    """Absent: one response with the whole audio once it is made."""
    task_type: TaskType | None = None
    language: LanguageName = Language.AUTO
    ref_audio: Base64Audio | None = None
    ref_text: RefText | None = None
    x_vector_only_mode: bool = False
    max_new_tokens: MaxNewTokens | None = None
    seed: Seed | None = None

    @property
    def voice_name(self) -> str | None:
        return self.voice.id if isinstance(self.voice, VoiceObject) else self.voice


class ModelView(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "qwen3-tts-gateway"


class ModelList(BaseModel):
    model_config = ConfigDict(frozen=True)

    object: Literal["list"] = "list"
    data: tuple[ModelView, ...]


class OpenAIError(BaseModel):
    model_config = ConfigDict(frozen=True)

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    """OpenAI's error envelope, which its SDKs turn into typed exceptions."""

    model_config = ConfigDict(frozen=True)

    error: OpenAIError
