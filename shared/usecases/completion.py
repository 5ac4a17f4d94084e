"""Finishing a job: the same steps whether the 4090's runner or RunPod's webhook reports.

Each step is one transactional update by the job's lease holder; a holder that lost its lease
to another worker (or whose job was canceled meanwhile) finishes nothing (``False``), because
what happened instead stands. Each update is fenced by the run's attempt, so a run of an
earlier claim of the same job (on the same worker, after a cancel and a retry) finishes nothing
either. A finished job announces its result; a finished child of a cast or a batch lets its
parent settle (``parents``), writing nothing into it.
"""

from __future__ import annotations

import logging

from shared.domain.errors import InvalidTransition, NotFound
from shared.domain.jobs import Job, JobError, JobOutput
from shared.domain.synthesis import children_of, parent_of
from shared.usecases.cache import remember
from shared.usecases.gateway import Gateway
from shared.usecases.parents import child_ended
from shared.usecases.results import announce
from shared.usecases.webhooks import deliver_due

log = logging.getLogger(__name__)


def succeed(gw: Gateway, job: Job, *, worker: str, output: JobOutput) -> bool:
    try:
        done = gw.jobs.update(
            job.id,
            lambda j: j.succeed(
                worker,
                attempt=job.attempts,
                result=output.audio,
                voice_id=output.voice_id,
                now=gw.clock(),
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
        done = gw.jobs.update(
            job.id, lambda j: j.fail(worker, attempt=job.attempts, error=error, now=gw.clock())
        )
    except InvalidTransition as exc:
        log.info("lost the lease before failing", extra={"job_id": job.id, "why": exc.message})
        return False
    log.warning("job failed", extra={"job_id": job.id, "code": error.code, "error": error.message})
    finished(gw, done)
    return True


def release(gw: Gateway, job: Job, *, worker: str, error: JobError, spare: bool = False) -> bool:
    """Back to ``queued`` after a transient failure, for another attempt; ``spare``: the
    worker failed, not the job, and the attempt is not counted (``Job.release``)."""
    try:
        gw.jobs.update(
            job.id,
            lambda j: j.release(
                worker, attempt=job.attempts, error=error, now=gw.clock(), spare=spare
            ),
        )
    except InvalidTransition as exc:
        log.info("lost the lease before releasing", extra={"job_id": job.id, "why": exc.message})
        return False
    log.warning("job released for retry", extra={"job_id": job.id, "error": error.message})
    return True


def cancel_overdue(gw: Gateway, job_id: str) -> bool:
    """Cancel a job past its deadline, and a parent's unfinished children with it; whether
    this call did."""
    try:
        done = gw.jobs.update(job_id, lambda j: j.expire_deadline(now=gw.clock()))
    except (InvalidTransition, NotFound):
        return False
    log.info("job canceled at its deadline", extra={"job_id": job_id})
    finished(gw, done)
    cancel_children(gw, done, reason=f"its parent {done.id} passed its deadline")
    return True


def cancel(gw: Gateway, job_id: str, *, reason: str) -> Job | None:
    """Cancel one queued or running job; the canceled job, or ``None`` if it had ended (or
    does not exist)."""
    try:
        canceled = gw.jobs.update(job_id, lambda j: j.cancel(now=gw.clock(), reason=reason))
    except (InvalidTransition, NotFound):
        return None
    finished(gw, canceled)
    return canceled


def cancel_children(gw: Gateway, parent: Job, *, reason: str) -> None:
    """A parent that ended canceled takes its unfinished children with it. The parent moves
    first, so a child ending meanwhile finds it settled and cannot count as its failure."""
    for child_id in children_of(parent.request):
        cancel(gw, child_id, reason=reason)


def finished(gw: Gateway, job: Job) -> None:
    """After any move into a terminal state: announce it, call back, and let its parent see
    whether it can settle."""
    announce(gw, job)
    deliver_due(gw, job)
    parent_id = job.parent_id or parent_of(job.request)
    if parent_id is not None:
        child_ended(gw, parent_id)
