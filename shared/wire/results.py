"""The message every job publishes once it ends (contracts/schemas/job-result.schema.json).

It goes to the results topic, and to the job's own reply topic when it named one. The body is
the job's outcome; the attributes repeat what a subscription filters on (``state``, ``owner``),
the ``announcement_id`` a subscriber dedupes on (delivery is at least once), and every
correlation attribute the request carried.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from shared.domain.backends import API_VERSION
from shared.domain.jobs import AudioResult, Job, JobState
from shared.domain.modes import Mode

JOB_ID_ATTRIBUTE = "job_id"
STATE_ATTRIBUTE = "state"
OWNER_ATTRIBUTE = "owner"
ANNOUNCEMENT_ID_ATTRIBUTE = "announcement_id"
RESERVED_ATTRIBUTES = frozenset(
    {JOB_ID_ATTRIBUTE, STATE_ATTRIBUTE, OWNER_ATTRIBUTE, ANNOUNCEMENT_ID_ATTRIBUTE}
)


def announcement_id(job: Job) -> str:
    """The same for every copy of one terminal attempt's message, new for the next: a job's
    ``attempts`` only grows (a retried job that runs again ends on a later attempt, a parent's
    retry starts another round), and a job answered from the cache ends once, at 0."""
    return f"{job.id}.{job.attempts}"


class ResultError(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class JobResultMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    api_version: int = API_VERSION
    announcement_id: str
    """Subscribers dedupe on it: a message can arrive more than once."""
    job_id: str
    owner: str
    state: JobState
    mode: Mode
    audio: AudioResult | None = None
    """``uri`` is the ``gs://`` object; ``format``, ``duration_s`` and ``bytes`` describe it."""
    voice_id: str | None = None
    error: ResultError | None = None
    correlation: dict[str, str] = {}
    finished_at: datetime

    @classmethod
    def of(cls, job: Job) -> JobResultMessage:
        return cls(
            announcement_id=announcement_id(job),
            job_id=job.id,
            owner=job.owner,
            state=job.state,
            mode=job.request.mode,
            audio=job.result if job.state is JobState.SUCCEEDED else None,
            voice_id=job.voice_id if job.state is JobState.SUCCEEDED else None,
            error=ResultError(code=job.error.code, message=job.error.message)
            if job.error and job.state is not JobState.SUCCEEDED
            else None,
            correlation=dict(job.correlation),
            finished_at=job.updated_at,
        )

    def attributes(self) -> dict[str, str]:
        return {
            **self.correlation,
            JOB_ID_ATTRIBUTE: self.job_id,
            STATE_ATTRIBUTE: self.state.value,
            OWNER_ATTRIBUTE: self.owner,
            ANNOUNCEMENT_ID_ATTRIBUTE: self.announcement_id,
        }
