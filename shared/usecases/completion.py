"""Finishing a job: the same steps whether the 4090's runner or RunPod's webhook reports.

Each step is one transactional update by the job's lease holder; a holder that lost its lease
to another worker (or whose job was canceled meanwhile) finishes nothing (``False``), because
what happened instead stands. A finished job announces its result; a finished child of a cast
or a batch reports into its parent.
"""

from __future__ import annotations

import logging

from shared.domain.errors import InvalidTransition, NotFound, TransientError
from shared.domain.jobs import Job, JobError, JobOutput, JobState
from shared.domain.synthesis import parent_of
from shared.usecases.cache import remember
from shared.usecases.gateway import Gateway
from shared.usecases.joining import start_join
from shared.usecases.results import announce
from shared.usecases.webhooks import deliver_due

log = logging.getLogger(__name__)


def succeed(gw: Gateway, job: Job, *, worker: str, output: JobOutput) -> bool:
    try:
        done = gw.jobs.update(
            job.id,
            lambda j: j.succeed(
                worker, result=output.audio, voice_id=output.voice_id, now=gw.clock()
            ),
        )
    except InvalidTransition as exc:
        log.info("lost the lease before finishing", extra={"job_id": job.id, "why": exc.message})
        return False
    remember(gw, done)
    log.info(
        "job succeeded",
        extra={
            "job_id": job.id,
            "duration_s": output.audio.duration_s if output.audio else None,
            "voice_id": output.voice_id,
        },
    )
    finished(gw, done)
    return True


def fail(gw: Gateway, job: Job, *, worker: str, error: JobError) -> bool:
    try:
        done = gw.jobs.update(job.id, lambda j: j.fail(worker, error=error, now=gw.clock()))
    except InvalidTransition as exc:
        log.info("lost the lease before failing", extra={"job_id": job.id, "why": exc.message})
        return False
    log.warning("job failed", extra={"job_id": job.id, "code": error.code, "error": error.message})
    finished(gw, done)
    return True


def release(gw: Gateway, job: Job, *, worker: str, error: JobError) -> bool:
    """Back to ``queued`` after a transient failure, for another attempt."""
    try:
        gw.jobs.update(job.id, lambda j: j.release(worker, error=error, now=gw.clock()))
    except InvalidTransition as exc:
        log.info("lost the lease before releasing", extra={"job_id": job.id, "why": exc.message})
        return False
    log.warning("job released for retry", extra={"job_id": job.id, "error": error.message})
    return True


def cancel_overdue(gw: Gateway, job_id: str) -> bool:
    """Cancel a job past its deadline; whether this call did."""
    try:
        done = gw.jobs.update(job_id, lambda j: j.expire_deadline(now=gw.clock()))
    except (InvalidTransition, NotFound):
        return False
    log.info("job canceled at its deadline", extra={"job_id": job_id})
    finished(gw, done)
    return True


def finished(gw: Gateway, job: Job) -> None:
    """After any move into a terminal state: announce it, call back, and count it into its
    parent."""
    announce(gw, job)
    deliver_due(gw, job)
    parent_id = job.parent_id or parent_of(job.request)
    if parent_id is None:
        return
    succeeded = job.state is JobState.SUCCEEDED
    try:
        parent = gw.jobs.update(
            parent_id,
            lambda p: p.child_finished(
                job.id, succeeded=succeeded, now=gw.clock(), result=job.result
            ),
        )
    except InvalidTransition:
        return  # counted already (a redelivery); counting is idempotent by child id
    except (NotFound, TransientError) as exc:
        log.warning(
            "parent not updated",
            extra={"job_id": job.id, "parent_id": parent_id, "error": exc.message},
        )
        return
    if parent.state.terminal:
        announce(gw, parent)
        deliver_due(gw, parent)
    else:
        start_join(gw, parent)
