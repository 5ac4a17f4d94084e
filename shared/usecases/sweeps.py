"""How the monitor's sweeps read their jobs: page by page, past what they cannot act on.

Each sweep's query selects only jobs it may act on (a flag the action clears, a due time at or
before now), yet some fail this time (a receiver down, a publish refused) and stay selected.
Reading the same first page every pass would let ``monitor.batch`` of them hide every job behind
them for good, so a pass reads up to ``monitor.pages`` pages, each starting after the last job of
the page before. One job whose handling raises a ``GatewayError`` is logged and skipped: the pass
goes on with the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from shared.domain.errors import GatewayError
from shared.domain.jobs import Job
from shared.usecases.gateway import Gateway

log = logging.getLogger(__name__)

Page = Callable[[int, Job | None], list[Job]]
"""Reads at most ``limit`` jobs, starting after ``start_after`` (the last job of the page
before; ``None``: from the first)."""


def sweep(gw: Gateway, *, name: str, page: Page, act: Callable[[Job], bool]) -> list[str]:
    """Call ``act`` on every job of up to ``monitor.pages`` pages; the ids it says it acted on."""
    limit = gw.settings.monitor.batch
    acted: list[str] = []
    after: Job | None = None
    for _ in range(gw.settings.monitor.pages):
        jobs = page(limit, after)
        for job in jobs:
            try:
                if act(job):
                    acted.append(job.id)
            except GatewayError as exc:
                log.warning(
                    "sweep skipped a job",
                    extra={"sweep": name, "job_id": job.id, "code": exc.code, "error": exc.message},
                )
        if len(jobs) < limit:
            break
        after = jobs[-1]
    return acted
