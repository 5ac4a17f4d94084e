"""Wire models: what callers see. Built from stored models, never the stored models themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.domain.audio_formats import AudioFormat
from shared.domain.jobs import Job, JobState, Progress
from shared.domain.synthesis import children_of
from shared.domain.voices import Voice, VoiceState
from shared.domain.webhooks import DeliveryState, WebhookEvent


class AudioView(BaseModel):
    model_config = ConfigDict(frozen=True)

    url: str
    """The API route that redirects to a short-lived signed URL."""
    format: AudioFormat
    content_type: str
    sample_rate: int
    duration_s: float
    bytes: int
    parts: int
    """Pieces published while it was made: ``/stream`` serves them (0: not streamed)."""


class ErrorView(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class ProgressView(BaseModel):
    model_config = ConfigDict(frozen=True)

    total: int
    succeeded: int
    failed: int
    children: tuple[str, ...]


class DeliveryView(BaseModel):
    model_config = ConfigDict(frozen=True)

    event: WebhookEvent
    state: DeliveryState
    attempts: int
    last_error: str | None


class JobView(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    state: JobState
    mode: str
    status_url: str
    attempts: int
    created_at: datetime
    updated_at: datetime
    audio: AudioView | None = None
    voice_id: str | None = None
    voice_url: str | None = None
    progress: ProgressView | None = None
    error: ErrorView | None = None
    cached_from: str | None = None
    """The finished job whose audio answered this one: no GPU ran for it."""
    webhook_deliveries: tuple[DeliveryView, ...] = ()
    """How each webhook call went (``failed`` after its retries ran out)."""

    @classmethod
    def of(cls, job: Job, *, progress: Progress | None = None, base_path: str = "") -> JobView:
        """``progress`` is a parent's count of its children (``shared.usecases.parents``)."""
        status_url = f"{base_path}/v1/jobs/{job.id}"
        audio = None
        if job.state is JobState.SUCCEEDED and job.result is not None:
            r = job.result
            audio = AudioView(
                url=f"{status_url}/audio",
                format=r.format,
                content_type=r.content_type,
                sample_rate=r.sample_rate,
                duration_s=r.duration_s,
                bytes=r.bytes,
                parts=r.parts,
            )
        error = ErrorView(code=job.error.code, message=job.error.message) if job.error else None
        counted = None
        children = children_of(job.request)
        if children and progress is not None:
            counted = ProgressView(
                total=progress.total,
                succeeded=progress.succeeded,
                failed=progress.failed,
                children=children,
            )
        voice_id = job.voice_id if job.state is JobState.SUCCEEDED else None
        # A parent's document stays ``queued`` until it ends (its children are the truth, and
        # no child writes into it); it is running once one of them has started.
        state = job.state
        if state is JobState.QUEUED and progress is not None and progress.started:
            state = JobState.RUNNING
        return cls(
            id=job.id,
            state=state,
            mode=job.request.mode,
            status_url=status_url,
            attempts=job.attempts,
            created_at=job.created_at,
            updated_at=job.updated_at,
            audio=audio,
            voice_id=voice_id,
            voice_url=f"{base_path}/v1/voices/{voice_id}" if voice_id else None,
            progress=counted,
            error=error if job.state in {JobState.FAILED, JobState.CANCELED} else None,
            cached_from=job.cached_from,
            webhook_deliveries=tuple(
                DeliveryView(
                    event=d.event, state=d.state, attempts=d.attempts, last_error=d.last_error
                )
                for d in (job.webhook.deliveries if job.webhook else ())
            ),
        )


class ManifestItemView(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str | None
    job_id: str
    state: JobState
    audio_url: str | None
    """The API route that redirects to the item's audio, once it has some."""
    duration_s: float | None
    error: ErrorView | None


class ManifestView(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    state: JobState
    items: tuple[ManifestItemView, ...]
    joined: ManifestItemView | None = None
    """The joined file, for a batch submitted with ``join``, once its job exists."""


class JobListView(BaseModel):
    model_config = ConfigDict(frozen=True)

    jobs: tuple[JobView, ...]
    next_page_token: str | None = None


class VoiceView(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    kind: Literal["builtin", "prompt"] = "prompt"
    owner: str | None = None
    state: VoiceState = VoiceState.ACTIVE
    character: str | None = None
    emotion: str | None = None
    intensity: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    ref_text: str | None = None
    x_vector_only: bool = False
    model: str | None = None
    size: int | None = None
    quarantine_reason: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    package_url: str | None = None

    @classmethod
    def of(cls, voice: Voice, *, base_path: str = "") -> VoiceView:
        return cls(
            id=voice.id,
            name=voice.name,
            owner=voice.owner,
            state=voice.state,
            **voice.traits.model_dump(),
            ref_text=voice.ref_text,
            x_vector_only=voice.x_vector_only,
            model=voice.model,
            size=voice.size,
            quarantine_reason=voice.quarantine_reason,
            created_at=voice.created_at,
            updated_at=voice.updated_at,
            package_url=f"{base_path}/v1/voices/{voice.id}/package" if voice.active else None,
        )

    @classmethod
    def builtin(cls, name: str) -> VoiceView:
        return cls(id=name.lower(), name=name, kind="builtin")


class VoiceListView(BaseModel):
    model_config = ConfigDict(frozen=True)

    voices: tuple[VoiceView, ...]
    next_page_token: str | None = None
