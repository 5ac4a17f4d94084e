"""Announcing a finished job: its result message, at least once on every topic it is owed to.

The move into a terminal state sets ``result_pending`` (the results topic) and, when the job
names a reply topic, ``reply_pending`` in the same transaction; whoever made the move publishes
to each and clears each flag on its own, and the monitor publishes what is still pending after
``monitor.announce_grace_s`` (the process died, or the publish failed). The two are tracked apart
so a reply topic that fails (deleted, no permission) never holds back the results topic: it is
tried ``monitor.reply_attempts`` times, then given up, logged, and recorded as ``reply_error``.

Delivery is at least once: a message repeats when a process dies between publishing it and
recording that it did, or two publishers race. Every copy of one terminal attempt's message
carries the same ``announcement_id`` (in the body and as an attribute), and a retried job's next
one a new id: subscribers dedupe on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from shared.domain.errors import GatewayError, InvalidTransition, NotFound, TransientError
from shared.domain.jobs import Job
from shared.usecases.gateway import Gateway
from shared.usecases.sweeps import sweep
from shared.wire.results import JobResultMessage

log = logging.getLogger(__name__)


def announce(gw: Gateway, job: Job) -> bool:
    """Publish ``job``'s result message to every topic still owed it; whether one got it."""
    results = _to_results(gw, job)
    reply = _to_reply(gw, job)
    return results or reply


def announce_pending(gw: Gateway) -> list[str]:
    """The monitor's sweeps: results (then replies) still owed, given a grace so a publisher
    that is only slow is not raced; the jobs whose message went out somewhere."""
    cutoff = gw.clock() - timedelta(seconds=gw.settings.monitor.announce_grace_s)
    results = sweep(
        gw,
        name="results",
        page=lambda limit, after: gw.jobs.find_unannounced(
            updated_before=cutoff, limit=limit, start_after=after
        ),
        act=lambda job: _to_results(gw, job),
    )
    replies = sweep(
        gw,
        name="replies",
        page=lambda limit, after: gw.jobs.find_replies_pending(
            updated_before=cutoff, limit=limit, start_after=after
        ),
        act=lambda job: _to_reply(gw, job),
    )
    return results + [job_id for job_id in replies if job_id not in results]


def _to_results(gw: Gateway, job: Job) -> bool:
    if not (job.result_pending and job.state.terminal):
        return False
    message = JobResultMessage.of(job)
    try:
        _publish(gw, gw.settings.results_topic, message)
        gw.jobs.update(job.id, _unchanged_since(job, lambda j: j.announced()))
    except (TransientError, NotFound, InvalidTransition) as exc:
        log.warning("result not announced yet", extra={"job_id": job.id, "error": str(exc)})
        return False
    log.info(
        "result announced",
        extra={
            "job_id": job.id,
            "state": job.state.value,
            "announcement_id": message.announcement_id,
        },
    )
    return True


def _to_reply(gw: Gateway, job: Job) -> bool:
    topic = job.reply_topic
    if not (job.reply_pending and job.state.terminal and topic):
        return False
    message = JobResultMessage.of(job)
    error: str | None = None
    try:
        _publish(gw, topic, message)
    except GatewayError as exc:
        # The caller's own topic: whatever is wrong with it (deleted, no permission) costs
        # one of its tries, never the results topic's message.
        error = exc.message
    limit = gw.settings.monitor.reply_attempts
    try:
        recorded = gw.jobs.update(
            job.id, _unchanged_since(job, lambda j: j.replied(error=error, max_attempts=limit))
        )
    except (TransientError, NotFound, InvalidTransition) as exc:
        log.warning("reply attempt not recorded", extra={"job_id": job.id, "error": str(exc)})
        return False
    context = {"job_id": job.id, "topic": topic, "announcement_id": message.announcement_id}
    if error is None:
        log.info("result announced on the reply topic", extra=context)
        return True
    if recorded.reply_pending:
        log.warning(
            "reply topic failed, tried again later",
            extra={**context, "failures": recorded.reply_failures, "error": error},
        )
    else:
        log.error("reply topic given up", extra={**context, "error": recorded.reply_error})
    return False


def _publish(gw: Gateway, topic: str, message: JobResultMessage) -> None:
    data = message.model_dump_json().encode()
    gw.publisher.publish(topic, data, attributes=message.attributes())


def _unchanged_since(job: Job, change: Callable[[Job], Job]) -> Callable[[Job], Job]:
    """``change``, unless the job moved since ``job`` was read (retried, and maybe ended
    again): its flags then belong to a later message, which its own mover publishes."""

    def apply(current: Job) -> Job:
        if (current.state, current.attempts) != (job.state, job.attempts):
            raise InvalidTransition(f"job {job.id} moved since its result message was made")
        return change(current)

    return apply
