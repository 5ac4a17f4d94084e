"""OpenAI's speech API as clients send it: ``POST /v1/audio/speech`` and ``GET /v1/models``.

The body takes OpenAI's fields, the extensions vLLM-Omni's Qwen3-TTS server accepts on the same
route (``task_type``, ``language``, ``ref_audio`` / ``ref_text``, ``x_vector_only_mode``,
``max_new_tokens``) and ours (``seed``, ``verify``), so clients of either work unchanged. The
core turns it into one of the native speech bodies; nothing about it is stored as is.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.domain.audio_formats import FORMATS, AudioFormat
from shared.domain.catalog import Language
from shared.domain.synthesis import (
    HARD_MAX_TEXT_CHARS,
    MAX_INSTRUCT_CHARS,
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
    instructions: Annotated[str, Field(max_length=MAX_INSTRUCT_CHARS)] | None = None
    """Up to OpenAI's 4,096 characters; empty (or blank) counts as absent, since some clients
    always send the field."""
    response_format: AudioFormat = AudioFormat.MP3
    speed: Speed = 1.0
    stream_format: StreamFormat | None = None
    """The answer's shape: the audio bytes (``audio``, OpenAI's default) or server-sent events
    (``sse``). Given, it also asks for the audio as it is made, unless ``stream`` says not."""
    stream: bool | None = None
    """vLLM's flag, which its clients send: true sends the audio as it is made, false whole
    once made. Absent: streamed when ``stream_format`` is given."""
    task_type: TaskType | None = None
    language: LanguageName = Language.AUTO
    ref_audio: Base64Audio | None = None
    ref_text: RefText | None = None
    x_vector_only_mode: bool = False
    max_new_tokens: MaxNewTokens | None = None
    seed: Seed | None = None
    verify: bool = False
    """Check every chunk, say a failing one again, and time the words (ours, as ``seed``);
    ``/dev/captioned_speech`` sets it."""

    @field_validator("instructions")
    @classmethod
    def _empty_instructions_are_none(cls, value: str | None) -> str | None:
        return value or None

    @property
    def voice_name(self) -> str | None:
        return self.voice.id if isinstance(self.voice, VoiceObject) else self.voice

    @property
    def streamed(self) -> bool:
        """Whether the audio is sent as it is made: as asked, where the format allows it (a
        format that cannot be streamed, FLAC, is sent whole once made)."""
        asked = self.stream if self.stream is not None else self.stream_format is not None
        return asked and FORMATS[self.response_format].streams


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


class WordTimestamp(BaseModel):
    """One word's time in Kokoro-FastAPI's shape, seconds from the start of the audio."""

    model_config = ConfigDict(frozen=True)

    word: str
    start_time: float
    end_time: float


class CaptionedSpeech(BaseModel):
    """Kokoro-FastAPI's answer to ``POST /dev/captioned_speech``, so its clients work: the
    audio itself (base64) and when each word is said."""

    model_config = ConfigDict(frozen=True)

    audio: str
    audio_format: AudioFormat
    timestamps: tuple[WordTimestamp, ...]


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
