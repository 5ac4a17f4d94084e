"""Routing: the highest-priority healthy backend that can run the job's mode, and the message
that tells it.

Settings declare which backends exist and what each may offer; a backend's last heartbeat
says what it actually loaded, whether it is up, and (as the monitor counted) how many jobs
wait for it. A backend that has never reported is trusted on its configuration, so jobs queue
for a worker that has not started yet. Never chosen: a backend on another API version or
without the mode (a worker must never receive a job it cannot run). Avoided while another can
run the job: a backend marked offline or unhealthy, or whose heartbeat went stale. Spill-over:
a backend whose queue is deeper than its ``max_queue`` yields to the next one. A job that asks
for checks (``verify``) goes first to a backend that runs them all (an ASR model, a speaker
encoder); where none does, it runs where it can and its report names the checks that ran.
Nothing here names a particular backend.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from shared.domain.backends import API_VERSION, DOWN, BackendConfig, BackendHeartbeat
from shared.domain.errors import NoBackendAvailable, TransientError
from shared.domain.jobs import Job
from shared.domain.modes import Mode
from shared.domain.verification import Check
from shared.usecases.gateway import Gateway
from shared.wire.messages import JobMessage, job_attributes

log = logging.getLogger(__name__)

ALL_CHECKS = frozenset(Check)
"""What a backend must advertise to be first choice for a job that asks for checks."""


def choose_backend(
    backends: Sequence[BackendConfig],
    *,
    mode: Mode,
    seen: Mapping[str, BackendHeartbeat | None] | None = None,
    now: datetime | None = None,
    stale_after_s: float = float("inf"),
    exclude: frozenset[str] = frozenset(),
    verify: bool = False,
) -> BackendConfig:
    seen = seen or {}
    offers = {b.id: _offers(b, seen.get(b.id)) for b in backends}
    able = [b for b in backends if mode in offers[b.id] and b.id not in exclude]
    if not able:
        raise NoBackendAvailable(
            f"no backend can run mode {mode!r} now",
            details={"mode": mode, "offered": {k: list(v) for k, v in offers.items()}},
        )

    def rank(backend: BackendConfig) -> tuple[int, int, int, int, str]:
        beat = seen.get(backend.id)
        down = beat is not None and (
            beat.status in DOWN
            or (now is not None and now - beat.last_heartbeat > timedelta(seconds=stale_after_s))
        )
        full = (
            beat is not None
            and backend.max_queue is not None
            and beat.queue_depth > backend.max_queue
        )
        # A healthy backend with room beats a full one, which beats a down one; then, for a
        # job that asks for checks, one that runs them all; then priority.
        short = verify and beat is not None and not set(beat.capabilities.checks) >= ALL_CHECKS
        return (int(down), int(full), int(short), backend.priority, backend.id)

    return min(able, key=rank)


def _offers(backend: BackendConfig, beat: BackendHeartbeat | None) -> tuple[Mode, ...]:
    if beat is None:
        return backend.modes
    if beat.capabilities.api_version != API_VERSION:
        return ()
    return tuple(m for m in backend.modes if m in beat.capabilities.modes)


def route(
    gw: Gateway, *, mode: Mode, exclude: frozenset[str] = frozenset(), verify: bool = False
) -> BackendConfig:
    configured = gw.settings.backends
    return choose_backend(
        configured,
        mode=mode,
        # Read together: one round trip for every configured backend (none while cached).
        seen=gw.backends.get_many([b.id for b in configured]),
        now=gw.clock(),
        stale_after_s=gw.settings.monitor.stale_after_s,
        exclude=exclude,
        verify=verify,
    )


def publish_job(gw: Gateway, job: Job) -> bool:
    """Tell the job's backend about it. Returns whether the message went out."""
    if not job.backend:
        return False  # a cast parent: bookkeeping only, never routed
    data = JobMessage(job_id=job.id).encode()
    attributes = job_attributes(backend=job.backend, mode=job.request.mode)
    attempts = gw.settings.api.publish_attempts
    for attempt in range(1, attempts + 1):
        try:
            gw.publisher.publish(gw.settings.jobs_topic, data, attributes=attributes)
        except TransientError as exc:
            log.warning(
                "publish failed",
                extra={"job_id": job.id, "attempt": attempt, "error": exc.message},
            )
        else:
            return True
    log.error("job left queued for the monitor to re-publish", extra={"job_id": job.id})
    return False
