"""What a caller may ask the model to say: validated, typed synthesis requests.

The same model travels from the HTTP body into the job document and on to the worker, so a
request that was valid at the door is exactly what the engine receives.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.audio_formats import AudioFormat
from shared.catalog import Language, parse_language, parse_speaker

MAX_INSTRUCT_CHARS = 1000
HARD_MAX_TEXT_CHARS = 100_000
"""An absolute ceiling; the configured ``max_text_chars`` is the limit callers meet."""


class CustomVoiceRequest(BaseModel):
    """Speak ``text`` with one of the model's built-in speakers."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    mode: Literal["custom_voice"] = "custom_voice"
    text: Annotated[str, Field(min_length=1, max_length=HARD_MAX_TEXT_CHARS)]
    speaker: str
    language: Language = Language.AUTO
    instruct: Annotated[str, Field(max_length=MAX_INSTRUCT_CHARS)] | None = None
    format: AudioFormat = AudioFormat.WAV

    @field_validator("speaker", mode="before")
    @classmethod
    def _canonical_speaker(cls, value: object) -> object:
        return parse_speaker(value) if isinstance(value, str) else value

    @field_validator("language", mode="before")
    @classmethod
    def _canonical_language(cls, value: object) -> object:
        return parse_language(value) if isinstance(value, str) else value

    @field_validator("instruct")
    @classmethod
    def _empty_instruct_is_none(cls, value: str | None) -> str | None:
        return value or None


SynthesisRequest = CustomVoiceRequest
"""Every mode a job can carry; later modes join this as a union discriminated on ``mode``."""
