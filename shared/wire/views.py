"""Wire models: what callers see. Built from stored models, never the stored models themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.domain.audio_formats import AudioFormat
from shared.domain.jobs import Job, JobState, Progress
from shared.domain.synthesis import children_of
from shared.domain.verification import Check, ChunkReport, VerifyReport, WordTiming
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


class WordView(BaseModel):
    model_config = ConfigDict(frozen=True)

    word: str
    start_s: float
    end_s: float
    """Seconds from the start of the job's audio."""

    @classmethod
    def of(cls, word: WordTiming) -> WordView:
        return cls(word=word.word, start_s=word.start_s, end_s=word.end_s)


class MeasureView(BaseModel):
    model_config = ConfigDict(frozen=True)

    check: Check
    value: float
    bound: float
    low: float | None
    passed: bool


class AttemptView(BaseModel):
    model_config = ConfigDict(frozen=True)

    seed: int | None
    duration_s: float
    passed: bool
    measures: tuple[MeasureView, ...]
    transcript: str | None


class ChunkView(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    text: str
    passed: bool
    """Whether the audio kept passes every check."""
    kept: int
    """The index into ``attempts`` of the audio kept."""
    attempts: tuple[AttemptView, ...]

    @classmethod
    def of(cls, chunk: ChunkReport) -> ChunkView:
        return cls(
            index=chunk.index,
            text=chunk.text,
            passed=chunk.passed,
            kept=chunk.kept,
            attempts=tuple(
                AttemptView(
                    seed=a.seed,
                    duration_s=a.duration_s,
                    passed=a.passed,
                    measures=tuple(
                        MeasureView(
                            check=m.check, value=m.value, bound=m.bound, low=m.low, passed=m.passed
                        )
                        for m in a.measures
                    ),
                    transcript=a.transcript,
                )
                for a in chunk.attempts
            ),
        )


class VerifySummaryView(BaseModel):
    """A verified job's checks in three numbers: what a manifest shows per item."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    chunks: int
    remade: int
    """Chunks said again because an attempt failed a check."""
    below_threshold: tuple[int, ...]
    """The indexes of the chunks whose kept audio still fails a check."""

    @classmethod
    def of(cls, report: VerifyReport) -> VerifySummaryView:
        return cls(
            passed=report.passed,
            chunks=len(report.chunks),
            remade=report.remade,
            below_threshold=report.below_threshold,
        )


class VerificationView(BaseModel):
    model_config = ConfigDict(frozen=True)

    checks: tuple[Check, ...]
    summary: VerifySummaryView
    chunks: tuple[ChunkView, ...]

    @classmethod
    def of(cls, report: VerifyReport, *, brief: bool = False) -> VerificationView:
        return cls(
            checks=report.checks,
            summary=VerifySummaryView.of(report),
            chunks=() if brief else tuple(ChunkView.of(c) for c in report.chunks),
        )


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
    timestamps: tuple[WordView, ...] = ()
    """When each word of the audio is said (a job made with ``verify`` on a worker that
    aligns words). Empty for a joined batch, whose words are served as its ``/captions``,
    and in lists and webhook bodies (``brief``)."""
    verification: VerificationView | None = None
    """What the worker measured of each chunk, for a job made with ``verify``; in lists and
    webhook bodies, the summary without the chunks."""

    @classmethod
    def of(
        cls,
        job: Job,
        *,
        progress: Progress | None = None,
        base_path: str = "",
        brief: bool = False,
    ) -> JobView:
        """``progress`` is a parent's count of its children (``shared.usecases.parents``).
        ``brief`` leaves out the word timings and each chunk's measures (a long job has
        thousands): a page of jobs, or a webhook body, stays small."""
        status_url = f"{base_path}/v1/jobs/{job.id}"
        audio = None
        timestamps: tuple[WordView, ...] = ()
        verification = None
        if job.state is JobState.SUCCEEDED and job.result is not None:
            r = job.result
            timestamps = () if brief else tuple(map(WordView.of, r.words))
            verification = (
                VerificationView.of(r.verification, brief=brief) if r.verification else None
            )
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
            timestamps=timestamps,
            verification=verification,
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
    verification: VerifySummaryView | None = None
    """The item's checks in numbers, once it has succeeded with ``verify``."""


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
