"""The job: the stored record of one request, and the state machine that moves it.

``queued -> running -> succeeded | failed | canceled``. A running job is held by one worker
under a lease; a lease that runs out lets another worker claim it (or the monitor requeue it).
Terminal states never change, but for an owner's explicit ``retry`` of a failed or canceled job
(and the batch it belongs to, which runs again with it). Every transition is a pure function
``Job -> Job`` so the job store can apply it inside a transaction and tests can exercise it
without any store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, computed_field

from shared.domain.audio_formats import AudioFormat
from shared.domain.errors import InvalidTransition
from shared.domain.synthesis import BatchRequest, JobRequest, JoinPlan, children_of
from shared.domain.verification import VerifyReport, WordTiming
from shared.domain.webhooks import Webhook, WebhookEvent

MAX_SPARED_FAULTS = 3
"""Worker faults (a broken CUDA context) a job may meet without spending a try. Past that the
job itself is the likely cause, and its faults count as tries, so a job that breaks every GPU
it meets cannot have its workers restarted forever."""

PARENT_BACKEND = ""
"""The backend of a batch or cast parent: no worker runs a parent, only its children."""


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})


class Lease(BaseModel):
    model_config = ConfigDict(frozen=True)

    owner: str
    expires_at: datetime

    def live(self, now: datetime) -> bool:
        return now < self.expires_at


class AudioResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    uri: str
    """``gs://bucket/path`` of the audio object."""
    format: AudioFormat
    content_type: str
    sample_rate: int
    duration_s: float
    bytes: int
    parts: int = 0
    """Pieces published while it was made (a streamed job); 0 when it was not streamed."""
    verification: VerifyReport | None = None
    """What the worker measured of each chunk, where the job asked for checks."""
    words: tuple[WordTiming, ...] = ()
    """When each word is said, where the worker could align the audio with its text."""
    starts_s: tuple[float, ...] = ()
    """For a joined file: where each source (batch item) starts in it, in seconds."""


class JobOutput(BaseModel):
    """What a finished job produced: its audio, the voice it registered, or both."""

    model_config = ConfigDict(frozen=True)

    audio: AudioResult | None = None
    voice_id: str | None = None


class JobError(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    retryable: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Progress:
    """A parent's children, counted from their own documents when asked."""

    total: int
    succeeded: int
    failed: int
    """Failed or canceled."""
    running: int = 0
    """Claimed by a worker now."""

    @property
    def started(self) -> bool:
        return bool(self.succeeded or self.failed or self.running)


class Job(BaseModel):
    """A job as stored in ``jobs/{id}``. Never sent over the wire as-is (see ``JobView``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    owner: str
    kind: str = "synthesis"
    request: JobRequest
    state: JobState = JobState.QUEUED
    backend: str
    attempts: int = 0
    """The number of the latest claim, never reset: a run is fenced by it, so everything a run
    writes (audio, stream parts, its finish) is its own, and a run that lost its claim (expired,
    canceled, retried) can finish nothing. A parent, which is never claimed, counts its rounds
    (each retry starts one)."""
    retried_after: int = 0
    """``attempts`` when its owner last asked for a retry: the attempts since then are the ones
    a retry limit counts (``tries``)."""
    faults: int = 0
    """Runs since then that a worker fault ended (``release(spare=True)``): they are not
    counted in ``tries``, up to ``MAX_SPARED_FAULTS``."""
    lease: Lease | None = None
    idempotency_key: str | None = None
    result: AudioResult | None = None
    parts_published: dict[int, int] = Field(default_factory=dict)
    """Pieces of its audio each run has published so far, by attempt: a streamed job on a
    worker that can write the job (the home one; RunPod's pieces are never announced). Written
    after each piece outside the job's transactions (``JobStore.announce_parts``), so a stream
    listening to the document hears of the piece at once; keyed by attempt, so a stale run's
    late count lands under its own key and misleads no one."""
    voice_id: str | None = None
    """The voice a ``create_voice`` or ``design_voice`` job registered."""
    error: JobError | None = None
    runpod_id: str | None = None
    """The RunPod job running this one, while it is dispatched there."""
    parent_id: str | None = None
    """The batch or cast this job is a child of; its parent counts it by this field."""
    deadline: datetime | None = None
    """Not finished by then: canceled, never run late (``Cancel-After`` / ``deadline_s``)."""
    correlation: dict[str, str] = Field(default_factory=dict)
    """What the caller asked to be echoed on the job's result message."""
    reply_topic: str | None = None
    """A topic of the caller's (from the allowed list) that also gets the result message."""
    expires_at: datetime | None = None
    """When the document may be deleted (Firestore's TTL policy on this field)."""
    cache_key: str | None = None
    """Set when a result of this request may serve a later identical one (seeded, or asked)."""
    cached_from: str | None = None
    """The finished job whose audio this one reuses: no GPU ran for it."""
    webhook: Webhook | None = None
    """Where the caller wants to hear of its start and end, and how each delivery went."""
    webhook_due: bool = False
    """Some delivery is still pending: how the monitor finds the jobs it must call back for."""
    result_pending: bool = False
    """Set with the move into a terminal state, cleared once the results topic has the result
    message: a crash or a failed publish in between leaves it set, and the monitor publishes it
    then."""
    reply_pending: bool = False
    """The same for the job's ``reply_topic``, tracked apart so a reply topic that fails never
    holds back the results topic (see ``replied``)."""
    reply_failures: int = 0
    """Failed tries of the reply topic for the latest terminal move."""
    reply_error: str | None = None
    """Why the reply topic's last try failed; once it was given up, says so."""
    created_at: datetime
    updated_at: datetime
    state_times: dict[JobState, datetime] = Field(default_factory=dict)

    @property
    def tries(self) -> int:
        """Claims since the job was submitted or last retried by its owner, but for those a
        worker fault ended (``faults``)."""
        return self.attempts - self.retried_after - self.faults

    @property
    def fault_spared(self) -> bool:
        """Whether a worker fault in this run would be spared (not counted as a try)."""
        return self.faults < MAX_SPARED_FAULTS

    # Stored with the document (computed fields are dumped, and ignored when read back) so the
    # monitor's queries select on them; derived, so no transition can leave them stale.

    @computed_field  # type: ignore[prop-decorator]
    @property
    def webhook_due_at(self) -> datetime | None:
        """When the earliest pending webhook delivery is due: the monitor sends what is due."""
        return self.webhook.due_at if self.webhook is not None else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def runpod_cancel_due(self) -> bool:
        """Canceled while a RunPod job still carries it: the monitor tells RunPod to stop
        (``runpod_canceled`` clears ``runpod_id``, and with it this)."""
        return self.state is JobState.CANCELED and self.runpod_id is not None

    # -- transitions ------------------------------------------------------------------------

    def overdue(self, now: datetime) -> bool:
        return self.deadline is not None and now >= self.deadline and not self.state.terminal

    def claimable_by(self, worker: str, *, backend: str, now: datetime) -> str | None:
        """Why ``worker`` may not claim this job, or ``None`` if it may."""
        if self.state.terminal:
            return f"job is {self.state}"
        if children_of(self.request):
            return "a batch or cast parent is not run by a worker; its children are"
        if self.overdue(now):
            return "job is past its deadline"
        if self.backend != backend:
            return f"job is routed to {self.backend}"
        if self.state is JobState.RUNNING and self.lease is not None and self.lease.live(now):
            if self.lease.owner == worker:
                return "job is already running on this worker"
            return f"job is leased by {self.lease.owner}"
        return None

    def claim(self, worker: str, *, backend: str, now: datetime, lease_s: float) -> Job:
        reason = self.claimable_by(worker, backend=backend, now=now)
        if reason is not None:
            raise InvalidTransition(reason)
        return self._moved(
            JobState.RUNNING,
            now=now,
            attempts=self.attempts + 1,
            lease=Lease(owner=worker, expires_at=now + timedelta(seconds=lease_s)),
        )

    def extend_lease(self, worker: str, *, attempt: int, now: datetime, lease_s: float) -> Job:
        self._require_holder(worker, attempt=attempt)
        return self.model_copy(
            update={
                "lease": Lease(owner=worker, expires_at=now + timedelta(seconds=lease_s)),
                "updated_at": now,
            }
        )

    def dispatched(
        self, worker: str, *, attempt: int, runpod_id: str, now: datetime, lease_s: float
    ) -> Job:
        """Record which RunPod job carries this one (its webhook must name the same id), and
        lengthen the lease to cover RunPod's own queue and execution limits."""
        self._require_holder(worker, attempt=attempt)
        return self.model_copy(
            update={
                "runpod_id": runpod_id,
                "updated_at": now,
                "lease": Lease(owner=worker, expires_at=now + timedelta(seconds=lease_s)),
            }
        )

    def runpod_canceled(self) -> Job:
        """RunPod was told to stop the job it ran for this (canceled) one."""
        if self.state is not JobState.CANCELED or self.runpod_id is None:
            raise InvalidTransition("no RunPod job to cancel")
        return self.model_copy(update={"runpod_id": None})

    def reroute(self, backend: str, *, now: datetime) -> Job:
        """Send a job nobody has started to another backend. Its cache key named the backend it
        was routed to first (the backend fixes the model), so it no longer feeds the cache."""
        if self.state is not JobState.QUEUED:
            raise InvalidTransition(f"job is {self.state}; only queued jobs are re-routed")
        return self.model_copy(update={"backend": backend, "updated_at": now, "cache_key": None})

    def succeed(
        self,
        worker: str,
        *,
        attempt: int,
        result: AudioResult | None,
        voice_id: str | None = None,
        now: datetime,
    ) -> Job:
        self._require_holder(worker, attempt=attempt)
        return self._moved(
            JobState.SUCCEEDED,
            now=now,
            lease=None,
            result=result,
            voice_id=voice_id,
            error=None,
            runpod_id=None,
        )

    def fail(self, worker: str, *, attempt: int, error: JobError, now: datetime) -> Job:
        self._require_holder(worker, attempt=attempt)
        return self._moved(JobState.FAILED, now=now, lease=None, error=error, runpod_id=None)

    def release(
        self, worker: str, *, attempt: int, error: JobError, now: datetime, spare: bool = False
    ) -> Job:
        """Give a running job back to the queue after a transient failure. ``spare``: the
        worker failed, not the job (a CUDA fault), so this run is not counted as a try while
        ``fault_spared``."""
        self._require_holder(worker, attempt=attempt)
        faults = self.faults + int(spare and self.fault_spared)
        return self._moved(
            JobState.QUEUED, now=now, lease=None, error=error, runpod_id=None, faults=faults
        )

    def expire_lease(self, *, now: datetime) -> Job:
        if self.state is not JobState.RUNNING or self.lease is None or self.lease.live(now):
            raise InvalidTransition("job has no expired lease")
        return self._moved(JobState.QUEUED, now=now, lease=None, runpod_id=None)

    def join_due(self, children: Mapping[str, Job]) -> JoinPlan | None:
        """A joined batch whose items have all succeeded and whose join job does not exist yet:
        the join job to start (again, if it was lost). ``children`` are the children as stored
        now, by id (those not yet created are absent)."""
        if self.state.terminal or not isinstance(self.request, BatchRequest):
            return None
        join = self.request.join
        if join is None or join.job_id in children:
            return None
        items = self.request.children
        ok = all(_state(children, c) is JobState.SUCCEEDED for c in items)
        return join if ok else None

    def settle(self, children: Mapping[str, Job], *, now: datetime) -> Job:
        """The parent's one terminal move, made from its children as stored now.

        The children are the truth: no child ever writes into its parent, so a batch finished
        by many workers at once never contends on one document. Whoever sees every child
        terminal (the last finisher, or a monitor pass) makes this move; it raises
        ``InvalidTransition`` while some child still runs, and once the parent has ended, so
        racing callers settle it once.
        """
        if self.state.terminal:
            raise InvalidTransition(f"job {self.id} is already {self.state}")
        items = _items(self.request)
        if not items:
            raise InvalidTransition(f"job {self.id} has no children")
        waiting = [c for c in items if not _state(children, c).terminal]
        if waiting:
            raise InvalidTransition(f"job {self.id} waits for {len(waiting)} children")
        failed = [c for c in items if _state(children, c) is not JobState.SUCCEEDED]
        if failed:
            error = JobError(
                code="children_failed",
                message=f"{len(failed)} of {len(items)} items failed: {', '.join(failed)}",
            )
            return self._moved(JobState.FAILED, now=now, error=error)
        join = self.request.join if isinstance(self.request, BatchRequest) else None
        if join is None:
            return self._moved(JobState.SUCCEEDED, now=now, error=None)
        joined = children.get(join.job_id)
        if joined is None or not joined.state.terminal:
            raise InvalidTransition(f"job {self.id} waits for its joined file")
        if joined.state is JobState.SUCCEEDED:
            return self._moved(JobState.SUCCEEDED, now=now, error=None, result=joined.result)
        error = JobError(code="join_failed", message=f"the joined file failed: {join.job_id}")
        return self._moved(JobState.FAILED, now=now, error=error)

    def retry(self, *, now: datetime) -> Job:
        """A failed or canceled job, asked for again by its owner: back to ``queued`` under the
        same id (as RunPod's ``/retry``). The one way out of a terminal state, and only by
        request; it announces its end again when it ends again."""
        if self.state not in {JobState.FAILED, JobState.CANCELED}:
            raise InvalidTransition(f"job is {self.state}; only failed or canceled jobs retry")
        return self._moved(
            JobState.QUEUED,
            now=now,
            lease=None,
            error=None,
            # A retry starts a new attempt at once, not at the next claim: a retried job that
            # ends again before anyone claims it (canceled, overdue) must not end under the
            # number its last ending was announced with. A parent, never claimed, counts its
            # rounds this way.
            attempts=self.attempts + 1,
            retried_after=self.attempts + 1,
            faults=0,
            deadline=None,
            result=None,
            result_pending=False,
            runpod_id=None,
            webhook=self.webhook.reset() if self.webhook is not None else None,
            webhook_due=False,
        )

    def reopen(self, *, now: datetime) -> Job:
        """A parent one of whose failed or canceled children runs again: no longer ended."""
        if self.state not in {JobState.FAILED, JobState.CANCELED}:
            raise InvalidTransition(f"job is {self.state}; only failed or canceled jobs reopen")
        # Its other children have run already: a new round that is running from its start.
        return self.retry(now=now)._moved(JobState.RUNNING, now=now)

    def cancel(self, *, now: datetime, reason: str = "canceled by its owner") -> Job:
        """Queued or running, the job ends here; a worker holding it stops at its next piece
        and its result is discarded (its lease is gone)."""
        if self.state.terminal:
            raise InvalidTransition(f"job is already {self.state}")
        error = JobError(code="canceled", message=reason)
        return self._moved(JobState.CANCELED, now=now, lease=None, error=error)

    def expire_deadline(self, *, now: datetime) -> Job:
        if not self.overdue(now):
            raise InvalidTransition("job is not past its deadline")
        assert self.deadline is not None
        error = JobError(
            code="deadline_exceeded",
            message=f"not finished by its deadline {self.deadline.isoformat()}",
        )
        return self._moved(JobState.CANCELED, now=now, lease=None, error=error)

    def webhook_attempted(self, event: WebhookEvent, *, error: str | None, now: datetime) -> Job:
        """Record one attempt to deliver ``event`` (``error`` None: delivered)."""
        if self.webhook is None:
            raise InvalidTransition(f"job {self.id} has no webhook")
        webhook = self.webhook.attempted(event, error=error, now=now)
        return self.model_copy(update={"webhook": webhook, "webhook_due": webhook.pending})

    def from_cache(self, *, result: AudioResult, source: str, now: datetime) -> Job:
        """A new job answered by a finished identical one's audio, without a worker."""
        if self.state is not JobState.QUEUED or self.attempts:
            raise InvalidTransition("only a new job can be answered from the cache")
        return self._moved(JobState.SUCCEEDED, now=now, result=result, cached_from=source)

    def announced(self) -> Job:
        """The results topic has its result message."""
        return self.model_copy(update={"result_pending": False})

    def replied(self, *, error: str | None, max_attempts: int) -> Job:
        """One try of the reply topic: it has the message (``error`` None); or it failed and is
        tried again; or it has failed ``max_attempts`` times and is given up, saying so in
        ``reply_error``, so a topic that is gone is not tried for the rest of the job's life."""
        if not self.reply_pending:
            raise InvalidTransition(f"job {self.id} owes its reply topic nothing")
        if error is None:
            return self.model_copy(update={"reply_pending": False, "reply_error": None})
        failures = self.reply_failures + 1
        if failures >= max_attempts:
            error = f"given up after {failures} attempts: {error}"
        return self.model_copy(
            update={
                "reply_pending": failures < max_attempts,
                "reply_failures": failures,
                "reply_error": error,
            }
        )

    # -- helpers ----------------------------------------------------------------------------

    @property
    def announced_parts(self) -> int:
        """Pieces the current run has announced (``parts_published``)."""
        return self.parts_published.get(self.attempts, 0)

    def wanted(self, *, attempt: int) -> bool:
        """Whether the run holding claim ``attempt`` should go on (checked between pieces)."""
        return self.state is JobState.RUNNING and self.attempts == attempt

    def _require_holder(self, worker: str, *, attempt: int) -> None:
        # An expired lease still belongs to its run until someone else claims the job:
        # finishing late beats redoing the synthesis. The attempt is the fence: the same
        # worker process may hold a later claim of the same job (cancel, retry, claim again),
        # and its earlier run must not finish that one.
        if self.state is not JobState.RUNNING or self.lease is None:
            raise InvalidTransition(f"job is {self.state}, not running")
        if self.lease.owner != worker:
            raise InvalidTransition(f"job is leased by {self.lease.owner}, not {worker}")
        if self.attempts != attempt:
            raise InvalidTransition(f"job is on attempt {self.attempts}, not {attempt}")

    def _moved(self, state: JobState, *, now: datetime, **changes: object) -> Job:
        times = dict(self.state_times)
        times[state] = now
        update: dict[str, object] = {
            "state": state,
            "updated_at": now,
            "state_times": times,
            "result_pending": self.result_pending or state.terminal,
            # Each terminal move owes the reply topic its message, with tries of its own.
            "reply_pending": state.terminal and self.reply_topic is not None,
            "reply_failures": 0 if state.terminal else self.reply_failures,
            "reply_error": None if state.terminal else self.reply_error,
        }
        if self.webhook is not None:
            webhook = self.webhook
            if state is JobState.RUNNING:
                webhook = webhook.queued(WebhookEvent.START, now=now)
            if state.terminal:
                webhook = webhook.queued(WebhookEvent.COMPLETED, now=now)
            update["webhook"] = webhook
            update["webhook_due"] = webhook.pending
        return self.model_copy(update={**update, **changes})


def _items(request: JobRequest) -> tuple[str, ...]:
    """A parent's children that do the work: every child but a joined batch's join job."""
    if isinstance(request, BatchRequest):
        return request.children
    return children_of(request)


def _state(children: Mapping[str, Job], child_id: str) -> JobState:
    # A child not created yet (its creator died mid-submit) is as good as queued.
    child = children.get(child_id)
    return child.state if child is not None else JobState.QUEUED
