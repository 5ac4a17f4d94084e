"""Wire models for request bodies: what callers send, before the core turns it into a job.

They differ from the stored requests in ``shared.domain.synthesis`` where the caller hands us
something we store first (audio arrives as base64 and becomes an ``AudioRef``) or resolve
first (a voice named by id *or* name becomes a ``voice_id``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from shared.domain.catalog import Language
from shared.domain.modes import Mode
from shared.domain.synthesis import (
    MAX_JOIN_GAP_MS,
    Character,
    CustomVoiceRequest,
    Description,
    LanguageName,
    LoudnessFields,
    Mood,
    Name,
    ReferenceTranscript,
    Seed,
    SpeechFields,
    Tags,
    VoiceDesignRequest,
    VoiceTraits,
)
from shared.domain.webhooks import WebhookEvent

MAX_BASE64_CHARS = 48 * 1024 * 1024


def _decode_base64(value: object) -> object:
    if not isinstance(value, str):
        return value
    if len(value) > MAX_BASE64_CHARS:
        raise ValueError("audio is too large")
    # Tolerate a data: URL prefix, which browsers produce; reject anything that is not base64.
    payload = value.partition(",")[2] if value.startswith("data:") else value
    if not payload:
        raise ValueError("must be base64-encoded audio")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise ValueError("must be base64-encoded audio") from exc


Base64Audio = Annotated[bytes, BeforeValidator(_decode_base64), Field(min_length=1)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class VoiceCloneBody(SpeechFields, ReferenceTranscript):
    mode: Literal[Mode.VOICE_CLONE] = Mode.VOICE_CLONE
    ref_audio: Base64Audio


class ClonePromptBody(SpeechFields):
    mode: Literal[Mode.CLONE_PROMPT] = Mode.CLONE_PROMPT
    voice: Name
    """A voice id or a voice name."""


def _mode_of(value: Any) -> str | None:
    # ``mode`` may be omitted: built-in speakers were the only mode before the others existed.
    if isinstance(value, dict):
        mode = value.get("mode", Mode.CUSTOM_VOICE.value)
        return mode if isinstance(mode, str) else None
    return getattr(value, "mode", None)


SpeechBody = Annotated[
    Annotated[CustomVoiceRequest, Tag(Mode.CUSTOM_VOICE)]
    | Annotated[VoiceDesignRequest, Tag(Mode.VOICE_DESIGN)]
    | Annotated[VoiceCloneBody, Tag(Mode.VOICE_CLONE)]
    | Annotated[ClonePromptBody, Tag(Mode.CLONE_PROMPT)],
    Discriminator(_mode_of),
]


class VoiceFields(VoiceTraits):
    """Name and traits of a voice, flat as callers write them."""

    name: Name

    def traits(self) -> VoiceTraits:
        return VoiceTraits.model_validate(self.model_dump(include=set(VoiceTraits.model_fields)))


class CreateVoiceBody(VoiceFields, ReferenceTranscript):
    ref_audio: Base64Audio | None = None
    """Absent when the audio comes as a multipart file part."""


class VoicePatch(_Body):
    """Only the fields present change; ``null`` clears a trait."""

    name: Name | None = None
    character: Character | None = None
    emotion: Mood | None = None
    intensity: Mood | None = None
    description: Description | None = None
    tags: Tags | None = None


class CastItem(_Body):
    emotion: Annotated[str, Field(min_length=1, max_length=50)]
    intensity: Literal["low", "medium", "high"] = "medium"
    text: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    """The line to design; defaults to the cast's ``text``."""


class CastBody(_Body):
    character: Name
    base_description: Annotated[str, Field(min_length=1, max_length=800)]
    """Who the character is: age, timbre, accent. Emotion presets are added per item."""
    text: Annotated[str, Field(min_length=1, max_length=500)]
    """The line each designed voice speaks (it becomes the voice's reference)."""
    language: LanguageName = Language.AUTO
    items: Annotated[tuple[CastItem, ...], Field(min_length=1, max_length=100)]
    tags: Tags = ()
    seed: Seed | None = None


class NormalizeBody(LoudnessFields):
    audio: Base64Audio


CorrelationKey = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
CorrelationValue = Annotated[str, Field(max_length=256)]
MAX_DEADLINE_S = 7 * 24 * 3600


class JobOptions(_Body):
    """How a job is delivered, apart from what it asks for: they travel beside the request in
    a body (or as message attributes on the intake topic) and are kept on the job."""

    deadline_s: Annotated[float, Field(gt=0, le=MAX_DEADLINE_S)] | None = None
    """Not finished this many seconds after submission: canceled, never run late."""
    correlation: Annotated[dict[CorrelationKey, CorrelationValue], Field(max_length=16)] = {}
    """Echoed as attributes (and in the body) of the job's result message."""
    reply_topic: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    """Also publish the result here; only topics the deployment allows."""
    cache: bool | None = None
    """Reuse a finished identical request's audio: by default only for a seeded request;
    ``true`` also without a seed; ``false`` never (always synthesize afresh)."""
    webhook: Annotated[str, Field(min_length=8, max_length=2048)] | None = None
    """Called (signed, Standard Webhooks) when the job starts and when it ends."""
    webhook_events_filter: Annotated[tuple[WebhookEvent, ...], Field(min_length=1)] = (
        WebhookEvent.START,
        WebhookEvent.COMPLETED,
    )


OPTION_FIELDS = frozenset(JobOptions.model_fields)


MAX_BATCH_ITEMS = 1000
"""An absolute ceiling; the deployment's ``api.max_batch_items`` is the limit callers meet."""


class BatchItem(_Body):
    """One item of a batch: a speech body, and the caller's key for it. On the wire the key
    sits beside the body's own fields: ``{"key": "ch1-0001", "text": ..., "speaker": ...}``.

    An item is checked (``verify``) unless it says ``"verify": false``: a batch is long-form
    audio, where one bad chunk in hundreds is what nobody listens for."""

    key: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    request: SpeechBody

    @model_validator(mode="before")
    @classmethod
    def _flat_on_the_wire(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        fields = dict(value)
        if "request" not in fields:
            fields = {"key": fields.pop("key", None), "request": fields}
        request = fields["request"]
        if isinstance(request, dict):
            fields["request"] = {"verify": True, **request}
        return fields


class BatchBody(_Body):
    items: Annotated[tuple[BatchItem, ...], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]
    join: bool = False
    """Also make one file of every item's audio, in order (all items share one format)."""
    join_gap_ms: int = Field(default=0, ge=0, le=MAX_JOIN_GAP_MS)
    """Silence between items in the joined file."""
