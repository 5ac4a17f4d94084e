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
from shared.domain.jobs import Job, JobError, JobOutput, JobState
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
    """After any move into a terminal state: log it, announce it, call back, and let its parent
    see whether it can settle."""
    log.info("job ended", extra=ended_fields(job))
    announce(gw, job)
    deliver_due(gw, job)
    parent_id = job.parent_id or parent_of(job.request)
    if parent_id is not None:
        child_ended(gw, parent_id)


def ended_fields(job: Job) -> dict[str, object]:
    """The "job ended" line, one per job that ends wherever it ends (the 4090, RunPod's
    webhook, the monitor, the API for a cache hit): what the log-based metrics count and
    measure (infra/terraform/monitoring.tf). Times are seconds: ``queue_s`` from submission to
    the (last) claim, ``run_s`` from that claim to the end, ``audio_s`` the audio made, ``rtf``
    the real-time factor (``run_s / audio_s``: under 1 is faster than real time), ``ttfa_s``
    time to first audio for a job that was not streamed (a streamed one's is the worker's
    "first audio" line)."""
    fields: dict[str, object] = {
        "job_id": job.id,
        "mode": job.request.mode.value,
        "backend": job.backend or "none",
        "outcome": job.state.value,
        "code": job.error.code if job.error is not None else "",
        "cached": job.cached_from is not None,
    }
    ended = job.state_times.get(job.state, job.updated_at)
    started = job.state_times.get(JobState.RUNNING)
    run_s: float | None = None
    if started is not None and started <= ended:
        run_s = (ended - started).total_seconds()
        fields["queue_s"] = round((started - job.created_at).total_seconds(), 3)
        fields["run_s"] = round(run_s, 3)
    audio = job.result
    if job.state is JobState.SUCCEEDED and audio is not None:
        fields["audio_s"] = audio.duration_s
        if run_s is not None and audio.duration_s > 0 and job.cached_from is None:
            fields["rtf"] = round(run_s / audio.duration_s, 4)
        if audio.parts == 0:
            fields["ttfa_s"] = round((ended - job.created_at).total_seconds(), 3)
    return fields
