"""Claiming the job a message names, when the message may come before the job's document.

The API publishes a job's message beside the write of its document, not after it
(``jobs._submit``): a caller who waits for the first audio then pays the longer of the two
round trips, not both. So a worker (the 4090's runner, the RunPod dispatcher) can hear of a job
a moment before its document is there. It looks again, after pauses that grow from
``FIRST_PAUSE_S``, for ``UNWRITTEN_GRACE_S`` in all, before it takes the job for unknown: by
then the write has failed (and its caller was answered with an error, so no one waits for it),
or the document was deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from shared.domain.errors import NotFound
from shared.domain.jobs import Job
from shared.usecases.gateway import Gateway

UNWRITTEN_GRACE_S = 2.0
"""Far longer than a document write takes beside a publish (tens of milliseconds), and short
enough that a message whose job was never written holds a worker only briefly."""
FIRST_PAUSE_S = 0.005
MAX_PAUSE_S = 0.25


def claim_named(gw: Gateway, job_id: str, claim: Callable[[Job], Job]) -> Job:
    """``gw.jobs.update(job_id, claim)``, looking again while the job is not yet written.
    Raises ``NotFound`` once ``UNWRITTEN_GRACE_S`` has passed without it, and whatever else
    the update raises at once (``InvalidTransition``: not claimable)."""
    deadline = gw.clock() + timedelta(seconds=UNWRITTEN_GRACE_S)
    pause = FIRST_PAUSE_S
    while True:
        try:
            return gw.jobs.update(job_id, claim)
        except NotFound:
            if gw.clock() >= deadline:
                raise
        gw.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE_S)
