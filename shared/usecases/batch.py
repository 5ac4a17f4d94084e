"""Batches: many speech jobs submitted as one, followed as one, and read back as a manifest.

A batch is a parent job that no worker runs, and one ordinary speech job per item (routed on
its own, so items spread across backends); the parent's progress is counted from
its items, and it ends once, when the last item does (``parents``). Child ids derive from the
parent's, so a retried submission (the same Idempotency-Key) finds the same batch and creates
only the items a crashed first attempt never created. A failed item can be retried on its own.
"""

from __future__ import annotations

import hashlib
from contextlib import suppress
from dataclasses import dataclass

from shared.domain.errors import Conflict, InvalidRequest, InvalidTransition, NotFound
from shared.domain.jobs import PARENT_BACKEND, AudioResult, Job, JobError, JobState
from shared.domain.keys import Principal
from shared.domain.modes import Mode
from shared.domain.synthesis import (
    BatchRequest,
    JobRequest,
    JoinPlan,
    SpeechFields,
    children_of,
    output_format,
    spoken_text,
    wants_checks,
)
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import existing_job, get_job, job_id_for, prepare_speech
from shared.usecases.new_jobs import NO_OPTIONS, new_job
from shared.usecases.parents import settle
from shared.usecases.routing import publish_job, route
from shared.wire.bodies import BatchBody, JobOptions


@dataclass(frozen=True, kw_only=True)
class ManifestItem:
    key: str | None
    job_id: str
    state: JobState
    audio: AudioResult | None
    error: JobError | None


@dataclass(frozen=True, kw_only=True)
class Manifest:
    job: Job
    items: tuple[ManifestItem, ...]
    joined: ManifestItem | None = None
    """The joined file's job, once it exists (a batch submitted with ``join``)."""


def submit_batch(
    gw: Gateway,
    *,
    principal: Principal,
    body: BatchBody,
    idempotency_key: str | None = None,
    options: JobOptions = NO_OPTIONS,
) -> Job:
    limit = gw.settings.api.max_batch_items
    if len(body.items) > limit:
        raise InvalidRequest(
            f"a batch has at most {limit} items", field="items", details={"max_items": limit}
        )
    keys = [item.key for item in body.items if item.key is not None]
    if len(keys) != len(set(keys)):
        raise InvalidRequest("item keys must be unique within a batch", field="items")
    parent_id = job_id_for(gw, owner=principal.owner, idempotency_key=idempotency_key)
    child_ids = tuple(f"{parent_id}i{index}" for index in range(len(body.items)))
    children: list[JobRequest] = [
        prepare_speech(gw, principal=principal, body=item.request, job_id=child_id)
        for child_id, item in zip(child_ids, body.items, strict=True)
    ]
    # Route every item before storing anything: a batch some item of which no backend can
    # run is refused whole, with the reason.
    backends = {
        (request.mode, wants_checks(request)): route(
            gw, mode=request.mode, verify=wants_checks(request)
        )
        for request in children
    }
    request = BatchRequest(
        children=child_ids,
        keys=tuple(item.key for item in body.items),
        fingerprint=hashlib.sha256(body.model_dump_json().encode()).hexdigest(),
        join=_join_plan(gw, body=body, children=children, parent_id=parent_id),
    )
    parent = new_job(
        gw,
        job_id=parent_id,
        principal=principal,
        request=request,
        backend=PARENT_BACKEND,
        key=idempotency_key,
        options=options,
    )
    stored, created = gw.jobs.create(parent)
    if not created:
        stored = existing_job(stored, request=request)
    for child_id, child_request in zip(child_ids, children, strict=True):
        child = new_job(
            gw,
            job_id=child_id,
            principal=principal,
            request=child_request,
            backend=backends[child_request.mode, wants_checks(child_request)].id,
            key=None,
            parent_id=parent_id,
        )
        child, _ = gw.jobs.create(child)
        if child.state is JobState.QUEUED:
            publish_job(gw, child)
    return stored


FASTEST_CHARS_PER_S = 30.0
"""More characters a second than any voice speaks (fast English is about 20): a bound under
which a text's audio cannot be shorter."""


def _join_plan(
    gw: Gateway, *, body: BatchBody, children: list[JobRequest], parent_id: str
) -> JoinPlan | None:
    if not body.join:
        return None
    formats = sorted({fmt for fmt in map(output_format, children) if fmt is not None})
    if len(formats) != 1:
        raise InvalidRequest(
            "a joined batch needs one format for all its items",
            field="join",
            details={"formats": formats},
        )
    route(gw, mode=Mode.JOIN)  # refused now, not after every item has run
    # The joined file's length is known only once every item has run; what is certain now is
    # that speech is no faster than FASTEST_CHARS_PER_S, so a batch sure to exceed the limit is
    # refused before any GPU time is spent on it.
    shortest_s = sum(
        len(spoken_text(c))
        / (FASTEST_CHARS_PER_S * (c.speed if isinstance(c, SpeechFields) else 1))
        for c in children
    )
    limit_s = gw.settings.worker.max_join_s
    if shortest_s > limit_s:
        raise InvalidRequest(
            f"the joined file would last at least {shortest_s:.0f} s; a joined batch lasts at "
            f"most {limit_s:.0f} s: split it",
            field="join",
            details={"min_duration_s": round(shortest_s), "max_duration_s": limit_s},
        )
    return JoinPlan(job_id=f"{parent_id}j", format=formats[0], gap_ms=body.join_gap_ms)


def manifest(gw: Gateway, *, principal: Principal, job_id: str) -> Manifest:
    """Per item: its key, job, state, audio and error, in submission order."""
    job = get_job(gw, principal=principal, job_id=job_id)
    if not isinstance(job.request, BatchRequest):
        raise Conflict(f"job {job_id} is not a batch", details={"mode": job.request.mode.value})
    # Every item (and the join job) in one read, not one round trip per item.
    children = gw.jobs.get_many(children_of(job.request))
    items = tuple(
        _item(children.get(child_id), child_id, key=key)
        for child_id, key in zip(job.request.children, job.request.keys, strict=True)
    )
    joined = None
    if job.request.join is not None and job.request.join.job_id in children:
        join_id = job.request.join.job_id
        joined = _item(children[join_id], join_id, key=None)
    return Manifest(job=job, items=items, joined=joined)


def _item(child: Job | None, job_id: str, *, key: str | None) -> ManifestItem:
    return ManifestItem(
        key=key,
        job_id=job_id,
        state=child.state if child else JobState.QUEUED,
        audio=child.result if child and child.state is JobState.SUCCEEDED else None,
        error=child.error if child and child.state.terminal else None,
    )


def retry_job(gw: Gateway, *, principal: Principal, job_id: str) -> Job:
    """Run a failed or canceled job again under the same id. A parent (batch or cast) runs
    its failed and canceled children again; a child reopens the parent it had ended."""
    job = get_job(gw, principal=principal, job_id=job_id)
    if children_of(job.request):
        return _retry_parent(gw, job)
    backend = route(gw, mode=job.request.mode)  # refused before anything moves
    retried = _retried(gw, job)
    if retried.parent_id is not None:
        # A parent that had ended with this child's failure runs again; one still running
        # (or gone) has nothing to reopen.
        with suppress(InvalidTransition, NotFound):
            gw.jobs.update(retried.parent_id, lambda p: p.reopen(now=gw.clock()))
    _send(gw, retried, backend_id=backend.id)
    return retried


def _retry_parent(gw: Gateway, parent: Job) -> Job:
    # Every child to run again is routed before anything moves: a refusal leaves all as it
    # was. The parent moves first, so no child that ends meanwhile can settle it again; a
    # crash after it leaves a parent whose children have all ended, which the monitor settles.
    children = gw.jobs.get_many(children_of(parent.request))
    again = [c for c in children.values() if c.state in {JobState.FAILED, JobState.CANCELED}]
    backends = {c.id: route(gw, mode=c.request.mode).id for c in again}
    retried = _retried(gw, parent)
    for child in again:
        with suppress(Conflict):  # retried by its owner meanwhile
            _send(gw, _retried(gw, child), backend_id=backends[child.id])
    return settle(gw, retried.id) or retried


def _retried(gw: Gateway, job: Job) -> Job:
    try:
        return gw.jobs.update(job.id, lambda j: j.retry(now=gw.clock()))
    except InvalidTransition as exc:
        raise Conflict(exc.message, details={"state": job.state.value}) from exc


def _send(gw: Gateway, job: Job, *, backend_id: str) -> None:
    if backend_id != job.backend:
        job = gw.jobs.update(job.id, lambda j: j.reroute(backend_id, now=gw.clock()))
    publish_job(gw, job)
