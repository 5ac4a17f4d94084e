"""Batches and casts as parents: their children are the truth, and the parent is settled once.

No child ever writes into its parent. A parent document written by each of 500 items finishing
at once is a hot document (Firestore sustains about one write per second per document; beyond
that, transactions time out and counts are lost), so instead a finished child asks how many of
its siblings have ended (an aggregation count, which reads no document and writes none) and
only when every item has ended does anyone read the children and make the parent's one
terminal move. The parent's progress is counted the same way when someone asks for it, and so
is whether it is running: a parent document is never moved to ``running`` (the first items to
finish would all race to make that one write), its view says so once a child has started. A
finisher that loses a race or meets contention leaves the move to the monitor, which settles
every parent whose children have all ended.
"""

from __future__ import annotations

import logging

from shared.domain.errors import InvalidTransition, NotFound, TransientError
from shared.domain.jobs import Job, JobState, Progress
from shared.domain.synthesis import BatchRequest, children_of
from shared.usecases.gateway import Gateway
from shared.usecases.joining import start_join
from shared.usecases.results import announce
from shared.usecases.webhooks import deliver_due

log = logging.getLogger(__name__)

ENDED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})
_FAILED = frozenset({JobState.FAILED, JobState.CANCELED})


def progress(gw: Gateway, job: Job) -> Progress | None:
    """A parent's children counted by outcome; ``None`` for a job that has no children."""
    children = children_of(job.request)
    if not children:
        return None
    succeeded = gw.jobs.count_children(parent_id=job.id, states=frozenset({JobState.SUCCEEDED}))
    failed = gw.jobs.count_children(parent_id=job.id, states=_FAILED)
    running = gw.jobs.count_children(parent_id=job.id, states=frozenset({JobState.RUNNING}))
    return Progress(total=len(children), succeeded=succeeded, failed=failed, running=running)


def child_ended(gw: Gateway, parent_id: str) -> None:
    """A child of ``parent_id`` has ended: settle the parent if that was the last one. Never
    raises for a store that is down or contended: the monitor settles what this leaves."""
    try:
        settle(gw, parent_id)
    except (NotFound, TransientError) as exc:
        log.warning("parent left to the monitor", extra={"job_id": parent_id, "error": str(exc)})


def settle(gw: Gateway, parent_id: str) -> Job | None:
    """Start a joined batch's join, or make the parent's terminal move, if its children allow
    it; the parent as it stands afterwards (``None`` if there is none)."""
    parent = gw.jobs.get(parent_id)
    if parent is None or parent.state.terminal:
        return parent
    ids = children_of(parent.request)
    if not ids:
        return parent
    join = parent.request.join if isinstance(parent.request, BatchRequest) else None
    items = len(ids) - (1 if join is not None else 0)
    ended = gw.jobs.count_children(parent_id=parent.id, states=ENDED)
    if ended < items:
        return parent
    children = gw.jobs.get_many(ids)
    if parent.join_due(children) is not None:
        start_join(gw, parent, children)
        return parent
    try:
        # The children are read again inside the parent's transaction: one retried since the
        # read above must not leave its parent failed.
        settled = gw.jobs.update_reading(
            parent.id, reading=ids, change=lambda p, now_read: p.settle(now_read, now=gw.clock())
        )
    except InvalidTransition:
        return gw.jobs.get(parent.id)  # settled meanwhile, or a child runs again
    log.info("parent settled", extra={"job_id": parent.id, "state": settled.state.value})
    announce(gw, settled)
    deliver_due(gw, settled)
    return settled
