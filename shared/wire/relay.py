"""The previous relay's request bodies, kept so its clients work unchanged (deprecated).

Each becomes one of today's bodies; the routes answer synchronously, as the relay did, with
``audio/wav`` and ``X-Duration-Seconds``. Field names are the relay's own.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from shared.domain.catalog import Language
from shared.domain.synthesis import (
    Instruct,
    LanguageName,
    LoudnessFields,
    Name,
    RefText,
    Seed,
    Text,
)
from shared.domain.voices import Voice
from shared.wire.bodies import Base64Audio, VoiceFields


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class RelaySynthesize(_Body):
    text: Text
    speaker: Annotated[str, Field(min_length=1, max_length=100)] = "Vivian"
    language: LanguageName = Language.AUTO
    instruct: Annotated[str, Field(max_length=1000)] | None = None
    seed: Seed | None = None


class _Transcript(_Body):
    """The relay's spelling of "a transcript unless x-vector only"."""

    ref_text: RefText | None = None
    x_vector_only_mode: bool = False

    @model_validator(mode="after")
    def _transcript_unless_x_vector(self) -> Self:
        if self.ref_text is None and not self.x_vector_only_mode:
            raise ValueError("ref_text is required unless x_vector_only_mode is true")
        return self


class RelayClone(_Transcript):
    text: Text
    ref_audio: Base64Audio
    language: LanguageName = Language.AUTO
    seed: Seed | None = None


class RelayDesign(_Body):
    text: Text
    instruct: Instruct
    language: LanguageName = Language.AUTO
    seed: Seed | None = None


class RelayClonePromptSpeech(_Body):
    text: Text
    prompt: Name = Field(validation_alias=AliasChoices("prompt_id", "prompt_name", "name"))
    """The voice: its id or its name (the relay called it ``prompt_id`` or ``name``)."""
    language: LanguageName = Language.AUTO
    seed: Seed | None = None


class RelayCreatePrompt(VoiceFields, _Transcript):
    audio: Base64Audio


class RelayNormalize(LoudnessFields):
    audio: Base64Audio


class RelayPrompt(BaseModel):
    """One registered voice as the relay listed it."""

    model_config = ConfigDict(frozen=True)

    prompt_id: str
    name: str
    ref_text: str | None = None
    character: str | None = None
    emotion: str | None = None
    intensity: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()

    @classmethod
    def of(cls, voice: Voice) -> RelayPrompt:
        return cls(
            prompt_id=voice.id,
            name=voice.name,
            ref_text=voice.ref_text,
            **voice.traits.model_dump(),
        )


class RelayPromptList(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompts: tuple[RelayPrompt, ...]


class RelayVoiceList(BaseModel):
    model_config = ConfigDict(frozen=True)

    speakers: tuple[str, ...]
    prompts: tuple[RelayPrompt, ...]


class RelayPromptCreated(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt_id: str
    name: str
    status: Literal["created", "deleted"] = "created"
