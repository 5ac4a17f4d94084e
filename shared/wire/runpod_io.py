"""What travels to and from a RunPod worker (contracts/schemas/runpod-*.schema.json).

RunPod workers hold no Google credentials (a third party's machines never get a key to the
project): the input carries the task
and short-lived signed URLs for every object the task reads or writes; the output reports
what was written, or a typed failure. Task failures come back as a ``COMPLETED`` RunPod job
whose output has ``failure`` set, so RunPod's own ``FAILED`` means the worker itself broke.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from shared.domain.backends import API_VERSION
from shared.domain.jobs import JobOutput
from shared.domain.synthesis import JobRequest


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignedUrls(_Model):
    """Each valid for at most an hour; only those the task's mode needs are present."""

    reference: str | None = None
    """GET: the uploaded clip (voice_clone, create_voice) or the clip to normalise."""
    prompt: str | None = None
    """GET: the voice's prompt file (clone_prompt)."""
    audio: str | None = None
    """PUT: where the task's audio goes."""
    voice_prompt: str | None = None
    """PUT: the new voice's ``.pt`` (create_voice, design_voice)."""
    voice_sidecar: str | None = None
    voice_reference: str | None = None
    """PUT: a designed line kept as the new voice's reference (design_voice)."""
    parts: tuple[str, ...] = ()
    """PUT, in order: the pieces of a streamed job's audio; what does not fit goes in the last."""
    sources: tuple[str, ...] = ()
    """GET, in order: each item's audio, for a batch's join."""


class RunPodTask(_Model):
    id: str
    owner: str
    request: JobRequest
    attempt: int = 0
    """The gateway claim this task runs under; its signed URLs name that attempt's objects."""


class RunPodInput(_Model):
    api_version: int = API_VERSION
    task: RunPodTask
    urls: SignedUrls
    audio_uri: str | None = None
    """``gs://`` URI the audio PUT lands at, reported back in the result."""
    audio_content_type: str | None = None
    prompt_generation: int | None = None
    """GCS generation of the prompt, so a warm worker's cache is never stale."""
    voice_reference_path: str | None = None
    """Bucket path of ``voice_reference``, recorded in the voice's sidecar."""


class RunPodFailure(_Model):
    code: str
    message: str
    retryable: bool


class RunPodOutput(JobOutput):
    """A task's output (``audio`` / ``voice_id``), or its ``failure``, for one gateway job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_version: int = API_VERSION
    job_id: str
    failure: RunPodFailure | None = None
