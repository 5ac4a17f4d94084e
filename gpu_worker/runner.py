"""The job runner: claim, synthesize, store, finish. Both worker entrypoints call ``run``.

Every delivery of a job message ends in one ``RunResult``; the entrypoint only turns it into
an ack or a nack. A message for a job that cannot be claimed (finished, leased by a live
worker, routed elsewhere) is acked with no work, which makes duplicate delivery harmless.
A streamed job is claimed beside its run rather than before it (``_claim_ahead``): its first
piece is generated while the claim commits, and nothing of the run is written until it has.

A CUDA fault is not a result: the job goes back to the queue without spending a try, and the
runner raises ``WorkerPoisoned`` for the entrypoint to stop the process (nothing more may run
on a broken CUDA context).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Protocol

from gpu_worker.tasks import Task
from shared.adapters import tracing
from shared.domain.errors import (
    GatewayError,
    InvalidTransition,
    JobCanceled,
    NotFound,
    PermanentError,
    TransientError,
    WorkerPoisoned,
)
from shared.domain.jobs import Job, JobError, JobOutput
from shared.domain.synthesis import SpeechFields
from shared.usecases import completion
from shared.usecases.claims import claim_named
from shared.usecases.gateway import Gateway
from shared.usecases.ports import Clock, JobStore
from shared.wire.messages import JobMessage

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Not ours to run: duplicate, stale, or already finished. Ack, do nothing."""
    RETRY = "retry"
    """A transient failure; the job went back to ``queued``. Nack so it is redelivered."""


@dataclass(frozen=True, slots=True)
class RunResult:
    job_id: str
    outcome: Outcome
    reason: str = ""

    @property
    def ack(self) -> bool:
        return self.outcome is not Outcome.RETRY


class Executor(Protocol):
    """Does a job's work (``gpu_worker.tasks.TaskExecutor``; fakes in tests)."""

    def execute(self, task: Task) -> JobOutput: ...


@dataclass(frozen=True, kw_only=True)
class RunnerConfig:
    worker_id: str
    backend_id: str
    lease_s: float
    max_attempts: int = 3


class JobRunner:
    def __init__(
        self,
        *,
        gateway: Gateway,
        executor: Executor,
        config: RunnerConfig,
    ) -> None:
        self._gw = gateway
        self._jobs = gateway.jobs
        self._executor = executor
        self._clock = gateway.clock
        self._config = config

    def run(self, message: JobMessage) -> RunResult:
        """Claim, run and finish one job. A store that is down or contended at any step is a
        ``RETRY`` (the message comes back; a claim it could not finish is taken again once its
        lease runs out), never a crashed run. ``WorkerPoisoned`` (a CUDA fault, after the job
        was given back) is raised: the process must stop."""
        try:
            return self._run(message)
        except WorkerPoisoned:
            raise
        except TransientError as exc:
            log.warning(
                "job store unavailable; the job comes back",
                extra={"job_id": message.job_id, "error": exc.message},
            )
            return RunResult(message.job_id, Outcome.RETRY, exc.message)

    def _run(self, message: JobMessage) -> RunResult:
        job_id = message.job_id
        ahead = self._claim_ahead(job_id)
        if ahead is not None:
            expected, claim = ahead
            return self._execute(expected, claim=claim)
        try:
            job = self._claim(job_id)
        except (NotFound, InvalidTransition) as exc:
            return self._not_claimed(job_id, exc)
        self._claimed(job)
        return self._execute(job)

    def _claim_ahead(self, job_id: str) -> tuple[Job, Future[Job]] | None:
        """For a streamed speech job, still queued: the job as its claim will make it, and that
        claim, started beside the run, so that the first piece's generation overlaps the
        claim's round trips (a transaction: three on Firestore) instead of waiting for them.
        The run writes nothing before the claim commits (``Task.wait_claimed``), so a claim
        that fails costs a piece's generation, never a write. Anything else, and a job not
        yet written, is claimed first, as ever."""
        seen = self._jobs.get(job_id)
        if seen is None or not (isinstance(seen.request, SpeechFields) and seen.request.stream):
            return None
        cfg = self._config
        try:
            expected = seen.claim(
                cfg.worker_id, backend=cfg.backend_id, now=self._clock(), lease_s=cfg.lease_s
            )
        except InvalidTransition:
            return None  # the claim itself says why
        return expected, self._gw.tasks.submit(lambda: self._claim(job_id))

    def _execute(self, job: Job, *, claim: Future[Job] | None = None) -> RunResult:
        """Run ``job``'s task and finish it; ``claim``: still committing (``_claim_ahead``),
        and settled before the job is finished, failed or given back."""
        try:
            return self._execute_held(job, claim)
        except _NotClaimed as exc:
            return self._not_claimed(job.id, exc.cause)
        except _ClaimedAgain as exc:
            # Claimed as a later attempt than the one run (another worker took the job and
            # gave it back in between): nothing of that run went out; run the claim held.
            self._claimed(exc.job)
            return self._execute(exc.job)

    def _execute_held(self, job: Job, claim: Future[Job] | None) -> RunResult:
        cfg = self._config
        # The claim queued the "start" webhook, if the caller asked for one: the monitor sends
        # it, since the worker never calls out from the home network.
        try:
            with (
                _LeaseKeeper(self._jobs, job, config=cfg, clock=self._clock),
                tracing.span("job synthesis", job_id=job.id, attempt=job.attempts),
            ):
                result = self._executor.execute(Task.of(job, claim=claim))
        except WorkerPoisoned as exc:
            try:
                held = self._held(job, claim)
            except _ClaimedAgain as again:
                held = again.job
            except _NotClaimed:
                raise exc from None  # not this worker's job to give back; the process stops
            self._give_back(held, exc)
            raise
        except JobCanceled as exc:
            self._held(job, claim)  # a claim that failed is the reason, if there is one
            return self._skip(job.id, exc.message)
        except PermanentError as exc:
            return self._finish_failed(self._held(job, claim), exc.code, exc.message)
        except TransientError as exc:
            held = self._held(job, claim)
            if held.tries >= cfg.max_attempts:
                return self._finish_failed(
                    held, exc.code, f"gave up after {held.tries} attempts: {exc.message}"
                )
            return self._release(held, exc)
        return self._finish_succeeded(self._held(job, claim), result)

    def _held(self, expected: Job, claim: Future[Job] | None) -> Job:
        """The job as this run holds it, once its claim has committed. Raises ``_NotClaimed``
        where the claim failed, ``_ClaimedAgain`` where it holds another attempt."""
        if claim is None:
            return expected
        try:
            job = claim.result()
        except (NotFound, InvalidTransition, TransientError) as exc:
            raise _NotClaimed(exc) from exc
        if job.attempts != expected.attempts:
            raise _ClaimedAgain(job)
        self._claimed(job)
        return job

    def _not_claimed(self, job_id: str, exc: GatewayError) -> RunResult:
        if isinstance(exc, NotFound):
            return self._skip(job_id, "unknown job")
        if isinstance(exc, TransientError):
            raise exc  # ``run`` answers a store that is down: the message comes back
        if completion.cancel_overdue(self._gw, job_id):
            return self._skip(job_id, "past its deadline: canceled, not run late")
        return self._skip(job_id, exc.message)

    def _claimed(self, job: Job) -> None:
        log.info(
            "job claimed",
            extra={
                "job_id": job.id,
                "attempt": job.attempts,
                "mode": job.request.mode.value,
                "backend": job.backend,
                # Submitted to claimed: the queue age log-based metric (infra/terraform).
                "queue_s": round((self._clock() - job.created_at).total_seconds(), 3),
            },
        )

    # -- steps ------------------------------------------------------------------------------

    @tracing.traced("job claim")
    def _claim(self, job_id: str) -> Job:
        cfg = self._config
        return claim_named(
            self._gw,
            job_id,
            lambda j: j.claim(
                cfg.worker_id, backend=cfg.backend_id, now=self._clock(), lease_s=cfg.lease_s
            ),
        )

    @tracing.traced("job completion")
    def _finish_succeeded(self, job: Job, output: JobOutput) -> RunResult:
        worker = self._config.worker_id
        if not completion.succeed(self._gw, job, worker=worker, output=output):
            return self._skip(job.id, "another worker took the job over; its result stands")
        return RunResult(job.id, Outcome.SUCCEEDED)

    @tracing.traced("job completion")
    def _finish_failed(self, job: Job, code: str, message: str) -> RunResult:
        error = JobError(code=code, message=message)
        if not completion.fail(self._gw, job, worker=self._config.worker_id, error=error):
            return self._skip(job.id, "another worker took the job over")
        return RunResult(job.id, Outcome.FAILED, message)

    def _release(self, job: Job, exc: TransientError, *, spare: bool = False) -> RunResult:
        error = JobError(code=exc.code, message=exc.message, retryable=True)
        worker = self._config.worker_id
        if not completion.release(self._gw, job, worker=worker, error=error, spare=spare):
            return self._skip(job.id, "another worker took the job over")
        return RunResult(job.id, Outcome.RETRY, exc.message)

    def _give_back(self, job: Job, exc: WorkerPoisoned) -> None:
        """The worker broke, not the job: back to the queue without spending a try (unless
        the job has met too many faults to be innocent, ``Job.fault_spared``)."""
        log.critical("CUDA fault: the worker must stop", extra={"job_id": job.id})
        try:
            if not job.fault_spared and job.tries >= self._config.max_attempts:
                self._finish_failed(
                    job, exc.code, f"gave up after {job.tries} attempts: {exc.message}"
                )
            else:
                self._release(job, exc, spare=True)
        except TransientError as store:
            # The lease runs out and the monitor requeues the job; the process stops anyway.
            log.warning(
                "could not give the job back", extra={"job_id": job.id, "error": store.message}
            )

    def _skip(self, job_id: str, reason: str) -> RunResult:
        log.info("job message skipped", extra={"job_id": job_id, "reason": reason})
        return RunResult(job_id, Outcome.SKIPPED, reason)


class _NotClaimed(Exception):
    """A run started beside its claim, and the claim failed: ``cause`` says why."""

    def __init__(self, cause: GatewayError) -> None:
        super().__init__(cause.message)
        self.cause = cause


class _ClaimedAgain(Exception):
    """A run started beside its claim, which committed as another attempt (``job``)."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"claimed as attempt {job.attempts}")
        self.job = job


class _LeaseKeeper:
    """Extends the job's lease every third of its length while the GPU works."""

    def __init__(self, jobs: JobStore, job: Job, *, config: RunnerConfig, clock: Clock) -> None:
        self._jobs = jobs
        self._job_id = job.id
        self._attempt = job.attempts
        self._config = config
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job.id}", daemon=True)

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        cfg = self._config
        while not self._stop.wait(cfg.lease_s / 3):
            try:
                self._jobs.update(
                    self._job_id,
                    lambda j: j.extend_lease(
                        cfg.worker_id, attempt=self._attempt, now=self._clock(), lease_s=cfg.lease_s
                    ),
                )
            except InvalidTransition as exc:
                log.warning("lease lost", extra={"job_id": self._job_id, "reason": exc.message})
                return
            except TransientError as exc:
                log.warning("lease extension failed", extra={"error": exc.message})
