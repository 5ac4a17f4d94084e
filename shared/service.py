"""The core use cases behind the HTTP API and the Pub/Sub intake.

Entry points parse their input into typed requests, call one function here, and map the
outcome. Nothing here knows about HTTP or Flask.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.auth import Principal
from shared.errors import Conflict, InvalidRequest, NotFound, TransientError
from shared.jobs import Job, JobState
from shared.messages import JobMessage, job_attributes
from shared.ports import ApiKeyStore, BackendStore, BlobStore, Clock, JobStore, Publisher
from shared.routing import choose_backend
from shared.settings import Settings
from shared.synthesis import SynthesisRequest

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY_CHARS = 200


def _random_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, kw_only=True)
class Gateway:
    """Everything the core needs, built once per process by a ``bootstrap()``."""

    settings: Settings
    jobs: JobStore
    blobs: BlobStore
    publisher: Publisher
    keys: ApiKeyStore
    backends: BackendStore
    clock: Clock
    new_id: Callable[[], str] = field(default=_random_id)


def submit_job(
    gw: Gateway,
    *,
    principal: Principal,
    request: SynthesisRequest,
    idempotency_key: str | None = None,
) -> Job:
    """Persist a job, then route and publish it. The job exists before anyone hears 'accepted'.

    A failed publish does not lose the job: it stays ``queued`` and the monitor re-publishes
    queued jobs that no worker picked up.
    """
    limit = gw.settings.api.max_text_chars
    if len(request.text) > limit:
        raise InvalidRequest(
            f"text has {len(request.text)} characters; the limit is {limit}",
            field="text",
            details={"max_chars": limit},
        )
    backend = choose_backend(gw.settings.backends, mode=request.mode)
    now = gw.clock()
    job_id = _job_id(gw, owner=principal.owner, idempotency_key=idempotency_key)
    candidate = Job(
        id=job_id,
        owner=principal.owner,
        request=request,
        backend=backend.id,
        idempotency_key=idempotency_key,
        created_at=now,
        updated_at=now,
        state_times={JobState.QUEUED: now},
    )
    job, created = gw.jobs.create(candidate)
    if not created:
        if job.request != request:
            raise Conflict(
                "Idempotency-Key was already used for a different request",
                field="Idempotency-Key",
                details={"job_id": job.id},
            )
        if job.state is not JobState.QUEUED:
            return job
    publish_job(gw, job)
    return job


def publish_job(gw: Gateway, job: Job) -> bool:
    """Tell the job's backend about it. Returns whether the message went out."""
    data = JobMessage(job_id=job.id).encode()
    attributes = job_attributes(backend=job.backend, mode=job.request.mode)
    attempts = gw.settings.api.publish_attempts
    for attempt in range(1, attempts + 1):
        try:
            gw.publisher.publish(gw.settings.jobs_topic, data, attributes=attributes)
        except TransientError as exc:
            log.warning(
                "publish failed",
                extra={"job_id": job.id, "attempt": attempt, "error": exc.message},
            )
        else:
            return True
    log.error("job left queued for the monitor to re-publish", extra={"job_id": job.id})
    return False


def get_job(gw: Gateway, *, principal: Principal, job_id: str) -> Job:
    job = gw.jobs.get(job_id) if _plausible_id(job_id) else None
    # Someone else's job is indistinguishable from a missing one.
    if job is None or not principal.may_see(job.owner):
        raise NotFound(f"no job {job_id!r}")
    return job


def audio_url(gw: Gateway, *, principal: Principal, job_id: str) -> str:
    """A short-lived signed URL for a finished job's audio."""
    job = get_job(gw, principal=principal, job_id=job_id)
    if job.state is not JobState.SUCCEEDED or job.result is None:
        raise Conflict(
            f"job {job_id} is {job.state}; audio exists only once it has succeeded",
            details={"state": job.state.value},
        )
    path = job.result.uri.removeprefix(f"gs://{gw.settings.bucket}/")
    return gw.blobs.signed_url(path, ttl_s=gw.settings.api.signed_url_ttl_s)


def _job_id(gw: Gateway, *, owner: str, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return gw.new_id()
    if not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidRequest(
            f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY_CHARS} characters",
            field="Idempotency-Key",
        )
    # Derived ids make a retried submit race-free: both attempts address the same document.
    return hashlib.sha256(f"{owner}\0{idempotency_key}".encode()).hexdigest()[:32]


def _plausible_id(job_id: str) -> bool:
    return 0 < len(job_id) <= 128 and job_id.isalnum()
