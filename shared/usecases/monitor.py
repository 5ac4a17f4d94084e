"""The scheduled monitor: keeps backends' health true and moves work that would otherwise wait.

One pass (Cloud Scheduler → Pub/Sub → ``functions/monitor.py``, every minute; tests call it
directly) does, in order:
1. refreshes the RunPod backend's document from the endpoint's ``/health``; marks any other
   backend offline whose heartbeat is older than ``monitor.stale_after_s``;
2. re-routes jobs still ``queued`` for a backend that is down to the best other backend, and
   publishes them there;
3. returns jobs whose lease expired to ``queued`` and publishes them again;
4. asks RunPod for the status of dispatched jobs whose webhook is overdue, and finishes them;
5. publishes again jobs left ``queued`` longer than ``monitor.requeue_after_s`` (a lost
   publish, a lost message): claims make the duplicates harmless;
6. settles each batch or cast whose children have all ended but which nobody settled;
7. counts each backend's queue, which spill-over routing reads.
Every change is one transactional update with its own precondition, so two monitors running at
once, or a monitor racing a worker, cannot double-move a job. Each step's query selects only
what it may act on (a flag its action clears, a due time at or before now), and reads past what
it cannot act on this time, page by page (``sweeps``): no number of stuck jobs starves the others,
and one job that fails is logged and skipped. Health changes are logged as structured events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.domain.backends import (
    API_VERSION,
    DOWN,
    BackendConfig,
    BackendHeartbeat,
    BackendKind,
    BackendStatus,
    Capabilities,
    HealthEvent,
)
from shared.domain.errors import (
    GatewayError,
    InvalidTransition,
    NoBackendAvailable,
    RunPodJobGone,
    TransientError,
)
from shared.domain.jobs import PARENT_BACKEND, Job, JobState
from shared.domain.synthesis import wants_checks
from shared.usecases import completion
from shared.usecases.dispatch import complete, lost
from shared.usecases.gateway import Gateway
from shared.usecases.parents import settle
from shared.usecases.ports import RunPodApi
from shared.usecases.results import announce_pending
from shared.usecases.routing import publish_job, route
from shared.usecases.sweeps import Page, sweep
from shared.usecases.webhooks import deliver_pending
from shared.wire.runpod_status import RunPodStatus

log = logging.getLogger(__name__)


@dataclass
class MonitorReport:
    offline: list[str] = field(default_factory=list)
    rerouted: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    polled: dict[str, str] = field(default_factory=dict)
    republished: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    """Parents whose children had all ended but which nobody had settled, settled now."""
    overdue: list[str] = field(default_factory=list)
    """Jobs canceled at their deadline (queued ones too: nothing runs late)."""
    runpod_canceled: list[str] = field(default_factory=list)
    called_back: list[str] = field(default_factory=list)
    """Jobs whose webhook deliveries were due again (retries, or left by a dead process)."""
    announced: list[str] = field(default_factory=list)
    """Results whose publisher died before it could record the message, published now."""


def run_monitor(gw: Gateway, *, runpod: RunPodApi | None = None) -> MonitorReport:
    report = MonitorReport()
    now = gw.clock()
    down = _check_backends(gw, runpod=runpod, now=now, report=report)
    _cancel_overdue(gw, now=now, report=report)
    if runpod is not None:
        _cancel_on_runpod(gw, runpod, report=report)
    _reroute(gw, down=down, report=report)
    _expire_leases(gw, now=now, report=report)
    if runpod is not None:
        _poll_runpod(gw, runpod, now=now, report=report)
    _republish_stuck(gw, now=now, report=report)
    _settle_parents(gw, report=report)
    report.announced = announce_pending(gw)
    report.called_back = deliver_pending(gw)
    _count_queues(gw, down=down)
    return report


def health_event(
    gw: Gateway,
    event: str,
    *,
    backend: str | None = None,
    job_id: str | None = None,
    detail: str = "",
) -> None:
    """A structured log line, and a record for the debug view."""
    log.info(
        "backend health",
        extra={"event": event, "backend": backend, "job_id": job_id, "detail": detail},
    )
    now = gw.clock()
    record = HealthEvent(
        at=now,
        event=event,
        backend=backend,
        job_id=job_id,
        detail=detail,
        expires_at=now + timedelta(days=gw.settings.retention.event_days),
    )
    try:
        gw.events.record(record)
    except TransientError as exc:
        log.warning("health event not stored", extra={"error": exc.message})


# -- steps ---------------------------------------------------------------------------------


def _check_backends(
    gw: Gateway, *, runpod: RunPodApi | None, now: datetime, report: MonitorReport
) -> set[str]:
    stale = timedelta(seconds=gw.settings.monitor.stale_after_s)
    down: set[str] = set()
    for backend in gw.settings.backends:
        if backend.kind is BackendKind.RUNPOD and runpod is not None:
            _refresh_runpod(gw, runpod, backend, now=now)
        beat = gw.backends.get(backend.id)
        if beat is None:
            continue
        if beat.status is not BackendStatus.OFFLINE and now - beat.last_heartbeat > stale:
            gw.backends.set_status(backend.id, BackendStatus.OFFLINE)
            health_event(
                gw, "offline", backend=backend.id, detail=f"last heartbeat {beat.last_heartbeat}"
            )
            report.offline.append(backend.id)
            down.add(backend.id)
        elif beat.status is BackendStatus.OFFLINE:
            down.add(backend.id)
    return down


def _cancel_overdue(gw: Gateway, *, now: datetime, report: MonitorReport) -> None:
    """Jobs past their deadline end now, including jobs waiting for a backend that is down;
    a parent takes its unfinished children with it."""
    for job in gw.jobs.find_overdue(now=now, limit=gw.settings.monitor.batch):
        try:
            if completion.cancel_overdue(gw, job.id):
                report.overdue.append(job.id)
        except GatewayError as exc:
            log.warning("overdue job not canceled", extra={"job_id": job.id, "error": exc.message})


def _cancel_on_runpod(gw: Gateway, runpod: RunPodApi, *, report: MonitorReport) -> None:
    """A canceled job RunPod still runs: tell RunPod to stop it (its result is refused anyway).
    Done, the job forgets its ``runpod_id``, and with it what selected it."""

    def cancel(job: Job) -> bool:
        if job.runpod_id is None:
            return False
        try:
            runpod.cancel(job.runpod_id)
        except GatewayError as exc:
            # Purged or finished on RunPod's side, or RunPod is down: either way nothing of
            # ours waits on it, and the next pass tries again unless it is gone.
            log.warning("runpod cancel failed", extra={"job_id": job.id, "error": exc.message})
            if exc.retryable:
                return False
        with suppress(InvalidTransition):
            gw.jobs.update(job.id, lambda j: j.runpod_canceled())
        return True

    report.runpod_canceled = sweep(
        gw,
        name="runpod cancels",
        page=lambda limit, after: gw.jobs.find_runpod_cancels(limit=limit, start_after=after),
        act=cancel,
    )


def _count_queues(gw: Gateway, *, down: set[str]) -> None:
    for backend in gw.settings.backends:
        depth = gw.jobs.count(state=JobState.QUEUED, backend=backend.id)
        gw.backends.set_queue_depth(backend.id, depth)
        # One line per backend and pass, up or not (one that never reported counts as down):
        # the "backend down for N minutes" alert counts the passes that found it down.
        beat = gw.backends.get(backend.id)
        up = beat is not None and backend.id not in down and beat.status not in DOWN
        log.info("backend state", extra={"backend": backend.id, "up": up, "queued": depth})


def _refresh_runpod(
    gw: Gateway, runpod: RunPodApi, backend: BackendConfig, *, now: datetime
) -> None:
    """RunPod has no worker of ours to heartbeat: the endpoint's /health stands in for it."""
    previous = gw.backends.get(backend.id)
    try:
        health = runpod.health()
    except GatewayError as exc:
        status, detail = BackendStatus.OFFLINE, exc.message
        in_hand = previous.jobs_in_hand if previous else 0
        last = previous.last_heartbeat if previous else now - timedelta(days=1)
    else:
        status, detail = BackendStatus.ONLINE, ""
        in_hand = health.jobs_in_progress + health.jobs_in_queue
        last = now
    if previous is None or previous.status is not status:
        health_event(gw, status.value, backend=backend.id, detail=detail)
    gw.backends.heartbeat(
        BackendHeartbeat(
            id=backend.id,
            kind=BackendKind.RUNPOD,
            worker_id=f"runpod:{gw.settings.runpod.endpoint_id}",
            status=status,
            # RunPod workers run this code base: the configured modes, this API version.
            capabilities=Capabilities(api_version=API_VERSION, modes=backend.modes, models=()),
            last_heartbeat=last,
            jobs_in_hand=in_hand,
        )
    )


def _reroute(gw: Gateway, *, down: set[str], report: MonitorReport) -> None:
    for backend_id in sorted(down):
        report.rerouted += sweep(
            gw,
            name="reroute",
            page=_queued(gw, backend=backend_id),
            act=_rerouter(gw, source=backend_id, down=down),
        )


def _rerouter(gw: Gateway, *, source: str, down: set[str]) -> Callable[[Job], bool]:
    def reroute(job: Job) -> bool:
        try:
            target = route(
                gw,
                mode=job.request.mode,
                exclude=frozenset({source}),
                verify=wants_checks(job.request),
            )
        except NoBackendAvailable:
            return False  # nobody else can run it: it waits for its backend
        if target.id in down:
            return False
        try:
            moved = gw.jobs.update(job.id, _rerouted(gw, target.id))
        except InvalidTransition:
            return False  # claimed meanwhile
        publish_job(gw, moved)
        health_event(gw, "rerouted", backend=target.id, job_id=job.id, detail=f"from {source}")
        return True

    return reroute


def _queued(gw: Gateway, *, backend: str, updated_before: datetime | None = None) -> Page:
    """Jobs queued for ``backend``: parents, routed to none, are never among them."""
    return lambda limit, after: gw.jobs.find(
        state=JobState.QUEUED,
        backend=backend,
        limit=limit,
        updated_before=updated_before,
        start_after=after,
    )


def _rerouted(gw: Gateway, backend_id: str) -> Callable[[Job], Job]:
    return lambda job: job.reroute(backend_id, now=gw.clock())


def _expire_leases(gw: Gateway, *, now: datetime, report: MonitorReport) -> None:
    """Running jobs whose lease ran out (parents hold none) go back to the queue."""

    def expire(job: Job) -> bool:
        if job.lease is None:
            return False
        try:
            requeued = gw.jobs.update(job.id, lambda j: j.expire_lease(now=gw.clock()))
        except InvalidTransition:
            return False  # extended or finished meanwhile
        publish_job(gw, requeued)
        health_event(
            gw, "lease_expired", backend=job.backend, job_id=job.id, detail=job.lease.owner
        )
        return True

    report.expired = sweep(
        gw,
        name="leases",
        page=lambda limit, after: gw.jobs.find_expired_leases(
            now=now, limit=limit, start_after=after
        ),
        act=expire,
    )


def _poll_runpod(gw: Gateway, runpod: RunPodApi, *, now: datetime, report: MonitorReport) -> None:
    """RunPod jobs silent for ``webhook_grace_s``: ask RunPod how they went."""
    silent_since = now - timedelta(seconds=gw.settings.monitor.webhook_grace_s)

    def poll(job: Job) -> bool:
        if job.runpod_id is None:
            return False  # claimed, not dispatched yet: its lease covers it
        try:
            status: RunPodStatus = runpod.status(job.runpod_id)
        except RunPodJobGone:
            report.polled[job.id] = lost(gw, job_id=job.id, runpod_id=job.runpod_id).value
            return True
        except GatewayError as exc:
            # Down, or refusing us (a revoked key): this job waits, the pass goes on.
            log.warning("runpod status unavailable", extra={"job_id": job.id, "error": exc.message})
            return False
        report.polled[job.id] = complete(gw, job_id=job.id, status=status).value
        return True

    sweep(
        gw,
        name="runpod status",
        page=lambda limit, after: gw.jobs.find(
            state=JobState.RUNNING,
            backend=gw.settings.runpod.backend_id,
            limit=limit,
            updated_before=silent_since,
            start_after=after,
        ),
        act=poll,
    )


def _republish_stuck(gw: Gateway, *, now: datetime, report: MonitorReport) -> None:
    """Jobs queued for ``requeue_after_s`` without a claim: publish them again."""
    cutoff = now - timedelta(seconds=gw.settings.monitor.requeue_after_s)
    for backend in gw.settings.backends:
        report.republished += sweep(
            gw,
            name="republish",
            page=_queued(gw, backend=backend.id, updated_before=cutoff),
            act=lambda job: publish_job(gw, job),
        )


def _settle_parents(gw: Gateway, *, report: MonitorReport) -> None:
    """Parents whose last child's finisher died or met contention before settling them: settle
    them now (or start a joined batch's join job that was never made). Parents are routed to
    no backend, so the query selects them alone."""
    batch = gw.settings.monitor.batch
    for state in (JobState.QUEUED, JobState.RUNNING):
        for parent in gw.jobs.find(state=state, backend=PARENT_BACKEND, limit=batch):
            try:
                settled = settle(gw, parent.id)
            except GatewayError as exc:
                log.warning("parent not settled", extra={"job_id": parent.id, "error": exc.message})
                continue
            if settled is not None and settled.state.terminal:
                report.settled.append(parent.id)
