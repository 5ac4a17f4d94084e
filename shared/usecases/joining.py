"""A batch's joined file: one more job, started once every item has succeeded.

The items run wherever routing sends them, so no single worker holds all their audio; the join
is therefore a job of its own (mode ``join``), routed like any other, that reads each item's
stored audio in order and writes one file. It needs no model, so any worker can take it. Its
id is fixed when the batch is submitted, so starting it twice (a redelivered report, the
monitor finding it missing) creates it once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from shared.domain.errors import NoBackendAvailable, TransientError
from shared.domain.jobs import Job
from shared.domain.keys import Principal
from shared.domain.modes import Mode
from shared.domain.synthesis import BatchRequest, JoinRequest, JoinSource
from shared.usecases.gateway import Gateway
from shared.usecases.new_jobs import new_job
from shared.usecases.routing import publish_job, route

log = logging.getLogger(__name__)


def start_join(gw: Gateway, parent: Job, children: Mapping[str, Job]) -> Job | None:
    """Create and publish ``parent``'s join job if it is due, given its ``children`` as stored
    now; the job, or ``None`` if not due or not possible yet (the monitor calls again)."""
    plan = parent.join_due(children)
    if plan is None or not isinstance(parent.request, BatchRequest):
        return None
    sources = []
    for child_id in parent.request.children:
        child = children.get(child_id)
        if child is None or child.result is None:
            log.warning("join waits for an item", extra={"job_id": parent.id, "item": child_id})
            return None
        path = gw.object_path(child.result.uri)
        sources.append(JoinSource(path=path, bytes=child.result.bytes))
    request = JoinRequest(sources=tuple(sources), format=plan.format, gap_ms=plan.gap_ms)
    try:
        backend = route(gw, mode=Mode.JOIN)
    except NoBackendAvailable as exc:
        log.warning("join not routed", extra={"job_id": parent.id, "error": exc.message})
        return None
    owner = Principal(owner=parent.owner, scopes=frozenset())
    job = new_job(
        gw,
        job_id=plan.job_id,
        principal=owner,
        request=request,
        backend=backend.id,
        key=None,
        parent_id=parent.id,
    )
    try:
        stored, created = gw.jobs.create(job)
    except TransientError as exc:
        log.warning("join not stored", extra={"job_id": parent.id, "error": exc.message})
        return None
    # Only its maker publishes it: a second finisher racing the first finds it made, and a
    # publish that was lost is the monitor's to repeat (it republishes jobs left queued).
    if created:
        publish_job(gw, stored)
    return stored
