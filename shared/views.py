"""Wire models: what callers see. Built from stored models, never the stored models themselves."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from shared.audio_formats import AudioFormat
from shared.jobs import Job, JobState


class AudioView(BaseModel):
    model_config = ConfigDict(frozen=True)

    url: str
    """The API route that redirects to a short-lived signed URL."""
    format: AudioFormat
    content_type: str
    sample_rate: int
    duration_s: float
    bytes: int


class ErrorView(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str


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
    error: ErrorView | None = None

    @classmethod
    def of(cls, job: Job, *, base_path: str = "") -> JobView:
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
            )
        error = ErrorView(code=job.error.code, message=job.error.message) if job.error else None
        return cls(
            id=job.id,
            state=job.state,
            mode=job.request.mode,
            status_url=status_url,
            attempts=job.attempts,
            created_at=job.created_at,
            updated_at=job.updated_at,
            audio=audio,
            error=error if job.state is JobState.FAILED else None,
        )
