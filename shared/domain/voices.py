"""Voices: registered clone prompts, as stored in ``voices/{id}``.

A voice is a ``.pt`` object in the bucket's voice-prompt prefix. Its id is derived from the
object's name, so every way of publishing one (the API, the worker, ``gsutil cp``) and every
redelivery of the same storage event lands on the same document. The GCS generation orders
writes: an event for an older generation than the one recorded changes nothing.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, computed_field

from shared.domain.synthesis import VoiceTraits


class VoiceState(StrEnum):
    ACTIVE = "active"
    QUARANTINED = "quarantined"
    DELETED = "deleted"


PROMPT_SUFFIX = ".pt"
SIDECAR_SUFFIX = ".json"
REFERENCE_SUFFIX = ".ref"
"""``<stem>.ref.<ext>`` keeps a voice's reference audio beside its prompt."""


def voice_id_for(*, bucket: str, object_name: str) -> str:
    return hashlib.sha256(f"{bucket}/{object_name}".encode()).hexdigest()[:24]


def prompt_object_name(*, prefix: str, stem: str) -> str:
    return f"{prefix}{stem}{PROMPT_SUFFIX}"


class Voice(BaseModel):
    """``voices/{id}``. Never sent over the wire as-is (see ``VoiceView``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    owner: str | None = None
    """``None``: part of the shared library, visible to every caller, changed only by admins."""
    bucket: str
    object_name: str
    generation: int
    size: int
    md5: str | None = None
    model: str | None = None
    """The model the prompt was made with, when the file says."""
    x_vector_only: bool = False
    ref_text: str | None = None
    reference_path: str | None = None
    traits: VoiceTraits = VoiceTraits()
    state: VoiceState = VoiceState.ACTIVE
    quarantine_reason: str | None = None
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def name_key(self) -> str:
        """The name as a lookup matches it (case folded): stored, so a voice is found by name
        through an indexed query rather than by reading every voice."""
        return self.name.casefold()

    @property
    def active(self) -> bool:
        return self.state is VoiceState.ACTIVE

    def matches(self, query: str) -> bool:
        """Case-insensitive text search over the name and the description."""
        needle = query.casefold()
        haystack = f"{self.name}\n{self.traits.description or ''}".casefold()
        return needle in haystack
