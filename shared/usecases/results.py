"""Announcing a finished job: exactly one result message per job that reaches a terminal state.

The move into a terminal state sets ``result_pending`` in the same transaction, so it can only
happen once however often the move is retried; whoever made the move publishes, then clears the
flag. If the process dies between the two, the flag stays and the monitor publishes then: a
message can repeat only when a process dies in the moment between the publish and the clear,
and the body names its job, so a subscriber dedupes on ``job_id``.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from shared.domain.errors import InvalidTransition, NotFound, TransientError
from shared.domain.jobs import Job
from shared.usecases.gateway import Gateway
from shared.wire.results import JobResultMessage

log = logging.getLogger(__name__)


def announce(gw: Gateway, job: Job) -> bool:
    """Publish ``job``'s result message if it is still pending; whether it went out."""
    if not job.result_pending:
        return False
    message = JobResultMessage.of(job)
    data = message.model_dump_json().encode()
    topics = [gw.settings.results_topic]
    if job.reply_topic:
        topics.append(job.reply_topic)
    try:
        for topic in topics:
            gw.publisher.publish(topic, data, attributes=message.attributes())
        gw.jobs.update(job.id, lambda j: j.announced())
    except (TransientError, NotFound, InvalidTransition) as exc:
        log.warning("result not announced yet", extra={"job_id": job.id, "error": str(exc)})
        return False
    log.info("result announced", extra={"job_id": job.id, "state": job.state.value})
    return True


def announce_pending(gw: Gateway, *, limit: int) -> list[str]:
    """The monitor's sweep: results whose publisher died before clearing the flag (given a
    grace, so a publisher that is only slow is not raced)."""
    grace = timedelta(seconds=gw.settings.monitor.announce_grace_s)
    now = gw.clock()
    return [
        job.id
        for job in gw.jobs.find_unannounced(limit=limit)
        if now - job.updated_at >= grace and announce(gw, job)
    ]
