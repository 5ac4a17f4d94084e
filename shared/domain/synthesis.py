"""What a job asks a worker to do: validated, typed requests, one model per mode.

A job carries exactly one of these, discriminated on ``mode``. The speech modes produce audio;
``create_voice`` and ``design_voice`` produce a registered voice (``design_voice`` also keeps
the designed line as audio); ``normalize`` rewrites an uploaded clip. Uploaded audio never
travels inside a job: it is stored first and referenced by ``AudioRef``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from shared.domain.audio_formats import FORMATS, STREAMING_FORMATS, AudioFormat
from shared.domain.audio_input import AudioContainer
from shared.domain.catalog import Language, parse_language, parse_speaker
from shared.domain.modes import Mode

MAX_INSTRUCT_CHARS = 4096
"""OpenAI's limit for ``instructions``: clients written against it send that much."""
MAX_DESCRIPTION_CHARS = 1000
MAX_REF_TEXT_CHARS = 2000
HARD_MAX_TEXT_CHARS = 100_000
"""An absolute ceiling; the configured ``max_text_chars`` is the limit callers meet."""
MAX_SEED = 2**32 - 1
MAX_NAME_CHARS = 100

Text = Annotated[str, Field(min_length=1, max_length=HARD_MAX_TEXT_CHARS)]
Instruct = Annotated[str, Field(min_length=1, max_length=MAX_INSTRUCT_CHARS)]
RefText = Annotated[str, Field(min_length=1, max_length=MAX_REF_TEXT_CHARS)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
Character = Annotated[str, Field(max_length=100)]
Mood = Annotated[str, Field(max_length=50)]
"""An emotion or an intensity."""
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS)]
Tags = Annotated[
    tuple[Annotated[str, Field(min_length=1, max_length=50)], ...], Field(max_length=20)
]
VoiceId = Annotated[str, Field(pattern=r"^[a-z0-9]{8,64}$")]
Speed = Annotated[float, Field(ge=0.25, le=4.0)]
LanguageName = Annotated[
    Language,
    BeforeValidator(lambda v: parse_language(v) if isinstance(v, str) else v),
]
"""A language by model name or ISO code, in any case (``English``, ``en``)."""
MaxNewTokens = Annotated[int, Field(ge=1, le=8192)]
TARGET_LUFS_RANGE = (-70.0, -5.0)
PEAK_DBFS_RANGE = (-20.0, 0.0)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class AudioRef(_Model):
    """Uploaded audio, stored in the bucket before the job exists."""

    path: str
    """Object path inside the gateway's bucket."""
    container: AudioContainer
    bytes: int = Field(gt=0)
    sha256: str | None = None
    """Of the uploaded bytes: what a cached result of this clip is keyed by."""


class VoiceTraits(_Model):
    """How a voice is found again: who speaks, in what mood, and free-form tags."""

    character: Character | None = None
    emotion: Mood | None = None
    intensity: Mood | None = None
    description: Description | None = None
    tags: Tags = ()


class TextFields(_Model):
    """What every job that speaks a text carries."""

    text: Text
    language: LanguageName = Language.AUTO
    format: AudioFormat = AudioFormat.WAV
    seed: Seed | None = None
    """Same request, same seed, same backend: the same audio."""


class SpeechFields(TextFields):
    """The speech modes: a text spoken for the caller, at a pace, perhaps streamed."""

    speed: Speed = 1.0
    """Pace of the result; the pitch is kept."""
    stream: bool = False
    """Publish the audio piece by piece while it is made (the streaming routes set it)."""
    max_new_tokens: MaxNewTokens | None = None
    """A lower cap on the codec frames generated per chunk than the worker's own bound."""
    verify: bool = False
    """Check every chunk made (signal, intelligibility, voice), say a failing one again with the
    next seed, and keep a report and the words' times with the result. Batch items and renders
    are checked unless they say otherwise; a single call asks for it."""

    @model_validator(mode="after")
    def _streams_only_in_a_streaming_format(self) -> Self:
        if self.stream and not FORMATS[self.format].streams:
            streaming = ", ".join(STREAMING_FORMATS)
            raise ValueError(f"{self.format} cannot be streamed; these can: {streaming}")
        return self


class CustomVoiceRequest(SpeechFields):
    """Speak with one of the model's built-in speakers."""

    mode: Literal[Mode.CUSTOM_VOICE] = Mode.CUSTOM_VOICE
    speaker: str
    instruct: Annotated[str, Field(max_length=MAX_INSTRUCT_CHARS)] | None = None

    @field_validator("speaker", mode="before")
    @classmethod
    def _canonical_speaker(cls, value: object) -> object:
        return parse_speaker(value) if isinstance(value, str) else value

    @field_validator("instruct")
    @classmethod
    def _empty_instruct_is_none(cls, value: str | None) -> str | None:
        return value or None


class VoiceDesignRequest(SpeechFields):
    """Speak with a voice described in words (``instruct``)."""

    mode: Literal[Mode.VOICE_DESIGN] = Mode.VOICE_DESIGN
    instruct: Instruct


class ReferenceTranscript(_Model):
    """A reference clip is described by its transcript, or used for its x-vector only."""

    ref_text: RefText | None = None
    x_vector_only: bool = False

    @model_validator(mode="after")
    def _transcript_unless_x_vector(self) -> Self:
        if self.ref_text is None and not self.x_vector_only:
            raise ValueError("ref_text is required unless x_vector_only is true")
        return self


class VoiceCloneRequest(SpeechFields, ReferenceTranscript):
    """Speak with the voice of a reference clip: with its transcript, or x-vector only."""

    mode: Literal[Mode.VOICE_CLONE] = Mode.VOICE_CLONE
    reference: AudioRef


class ClonePromptRequest(SpeechFields):
    """Speak with a registered voice (a saved clone prompt)."""

    mode: Literal[Mode.CLONE_PROMPT] = Mode.CLONE_PROMPT
    voice_id: VoiceId


class CreateVoiceRequest(ReferenceTranscript):
    """Build a clone prompt from reference audio and register it as ``voice_id``."""

    mode: Literal[Mode.CREATE_VOICE] = Mode.CREATE_VOICE
    voice_id: VoiceId
    name: Name
    reference: AudioRef
    traits: VoiceTraits = VoiceTraits()


class DesignVoiceRequest(TextFields):
    """Casting: design a line from a description, then lock that voice as a clone prompt."""

    mode: Literal[Mode.DESIGN_VOICE] = Mode.DESIGN_VOICE
    instruct: Instruct
    voice_id: VoiceId
    name: Name
    traits: VoiceTraits = VoiceTraits()
    parent_id: str | None = None


class LoudnessFields(_Model):
    """Where a normalised clip's loudness and peak land, and its output format."""

    target_lufs: float = Field(default=-18.0, ge=TARGET_LUFS_RANGE[0], le=TARGET_LUFS_RANGE[1])
    peak_dbfs: float = Field(default=-1.0, ge=PEAK_DBFS_RANGE[0], le=PEAK_DBFS_RANGE[1])
    format: AudioFormat = AudioFormat.WAV


class NormalizeRequest(LoudnessFields):
    """Loudness-normalise an uploaded clip."""

    mode: Literal[Mode.NORMALIZE] = Mode.NORMALIZE
    source: AudioRef


class CastRequest(_Model):
    """The parent of a casting call: no worker runs it; its children report into it."""

    mode: Literal[Mode.CAST] = Mode.CAST
    character: Name
    children: tuple[str, ...]
    fingerprint: str
    """Of the cast body: a reused Idempotency-Key with a different body is a conflict."""


ItemKey = Annotated[str, Field(min_length=1, max_length=100)]


MAX_JOIN_GAP_MS = 10_000


class JoinPlan(_Model):
    """A batch's joined file: made by one more child job once every item has succeeded."""

    job_id: str
    format: AudioFormat
    gap_ms: int = Field(default=0, ge=0, le=MAX_JOIN_GAP_MS)
    """Silence between items."""


class BatchRequest(_Model):
    """The parent of a batch: no worker runs it; its children report into it."""

    mode: Literal[Mode.BATCH] = Mode.BATCH
    children: tuple[str, ...]
    keys: tuple[ItemKey | None, ...]
    """The client's key for each child, in the same order."""
    fingerprint: str
    """Of the batch body: a reused Idempotency-Key with a different body is a conflict."""
    join: JoinPlan | None = None


class JoinSource(_Model):
    path: str
    """Object path of one item's audio inside the gateway's bucket."""
    bytes: int = Field(gt=0)


class JoinRequest(_Model):
    """Join a batch's items' audio, in order, into one file of the items' format."""

    mode: Literal[Mode.JOIN] = Mode.JOIN
    sources: tuple[JoinSource, ...] = Field(min_length=1)
    format: AudioFormat
    gap_ms: int = Field(default=0, ge=0, le=MAX_JOIN_GAP_MS)


SpeechRequest = CustomVoiceRequest | VoiceDesignRequest | VoiceCloneRequest | ClonePromptRequest
"""The modes that turn text into audio."""

JobRequest = Annotated[
    CustomVoiceRequest
    | VoiceDesignRequest
    | VoiceCloneRequest
    | ClonePromptRequest
    | CreateVoiceRequest
    | DesignVoiceRequest
    | NormalizeRequest
    | CastRequest
    | BatchRequest
    | JoinRequest,
    Field(discriminator="mode"),
]
"""Everything a job can carry."""


def output_format(request: JobRequest) -> AudioFormat | None:
    """The format of the audio a job produces; ``None`` when it produces none."""
    match request:
        case CreateVoiceRequest() | CastRequest() | BatchRequest():
            return None
        case _:
            return request.format


def parent_of(request: JobRequest) -> str | None:
    """The cast parent a job reports into when it finishes, if any."""
    return request.parent_id if isinstance(request, DesignVoiceRequest) else None


def children_of(request: JobRequest) -> tuple[str, ...]:
    """A cast or batch parent's children, a joined batch's join job last; nothing for any
    other job."""
    if isinstance(request, BatchRequest) and request.join is not None:
        return (*request.children, request.join.job_id)
    return request.children if isinstance(request, CastRequest | BatchRequest) else ()


def spoken_text(request: JobRequest) -> str:
    """The text a job speaks; empty for jobs that speak none."""
    return request.text if isinstance(request, TextFields) else ""


def wants_checks(request: JobRequest) -> bool:
    """Whether the job asked for its audio to be checked (``verify``)."""
    return isinstance(request, SpeechFields) and request.verify
