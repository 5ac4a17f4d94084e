"""Finishing a job: the same steps whether the 4090's runner or RunPod's webhook reports.

Each step is one transactional update by the job's lease holder; a holder that lost its lease
to another worker finishes nothing (``False``), because the other worker's result stands. A
finished child of a cast reports into its parent.
"""

from __future__ import annotations

import logging

from shared.domain.errors import InvalidTransition, NotFound, TransientError
from shared.domain.jobs import Job, JobError, JobOutput
from shared.domain.synthesis import parent_of
from shared.usecases.ports import Clock, JobStore

log = logging.getLogger(__name__)


def succeed(
    jobs: JobStore,
    clock: Clock,
    job: Job,
    *,
    worker: str,
    output: JobOutput,
) -> bool:
    try:
        jobs.update(
            job.id,
            lambda j: j.succeed(worker, result=output.audio, voice_id=output.voice_id, now=clock()),
        )
    except InvalidTransition as exc:
        log.info("lost the lease before finishing", extra={"job_id": job.id, "why": exc.message})
        return False
    log.info(
        "job succeeded",
        extra={
            "job_id": job.id,
            "duration_s": output.audio.duration_s if output.audio else None,
            "voice_id": output.voice_id,
        },
    )
    _report_to_parent(jobs, clock, job, succeeded=True)
    return True


def fail(jobs: JobStore, clock: Clock, job: Job, *, worker: str, error: JobError) -> bool:
    try:
        jobs.update(job.id, lambda j: j.fail(worker, error=error, now=clock()))
    except InvalidTransition as exc:
        log.info("lost the lease before failing", extra={"job_id": job.id, "why": exc.message})
        return False
    log.warning("job failed", extra={"job_id": job.id, "code": error.code, "error": error.message})
    _report_to_parent(jobs, clock, job, succeeded=False)
    return True


def release(jobs: JobStore, clock: Clock, job: Job, *, worker: str, error: JobError) -> bool:
    """Back to ``queued`` after a transient failure, for another attempt."""
    try:
        jobs.update(job.id, lambda j: j.release(worker, error=error, now=clock()))
    except InvalidTransition as exc:
        log.info("lost the lease before releasing", extra={"job_id": job.id, "why": exc.message})
        return False
    log.warning("job released for retry", extra={"job_id": job.id, "error": error.message})
    return True


def _report_to_parent(jobs: JobStore, clock: Clock, job: Job, *, succeeded: bool) -> None:
    parent_id = parent_of(job.request)
    if parent_id is None:
        return
    try:
        jobs.update(parent_id, lambda p: p.child_finished(job.id, succeeded=succeeded, now=clock()))
    except InvalidTransition:
        pass  # counted already (a redelivery); counting is idempotent by child id
    except (NotFound, TransientError) as exc:
        log.warning(
            "parent not updated",
            extra={"job_id": job.id, "parent_id": parent_id, "error": exc.message},
        )
