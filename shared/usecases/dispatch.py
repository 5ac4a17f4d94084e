"""The RunPod backend from the project's side: dispatch a job, and finish it when RunPod says.

Dispatch claims the job under a lease that covers only the call to RunPod (if the process dies
mid-call, the monitor requeues the job minutes later, not an hour later), signs exactly the URLs
the task needs (≤ 1 h), submits it with a per-job webhook, and records RunPod's id with a lease
long enough for RunPod's queue and execution limits. Completion, whether from the webhook or
from the monitor polling ``/status``, accepts only the RunPod job recorded for the gateway job,
and finishes it through the same steps as the 4090. RunPod's 429 / 5xx / timeouts are retried
inside the client with backoff, within a time budget below the push's ack deadline; a dispatch
that still fails releases the job for Pub/Sub to redeliver, up to ``runpod.max_attempts``, then
the job fails with RunPod's error. A job RunPod has forgotten (purged) is run again the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from contextlib import suppress
from enum import StrEnum

from pydantic import ValidationError

from shared.domain.audio_formats import (
    FORMATS,
    AudioFormat,
    audio_object_name,
    part_object_name,
)
from shared.domain.errors import (
    ConfigurationError,
    InvalidTransition,
    NotFound,
    RunPodBadOutput,
    RunPodJobGone,
    RunPodRejected,
    TransientError,
    Unauthenticated,
    WorkerPoisoned,
)
from shared.domain.jobs import Job, JobError, JobOutput, JobState
from shared.domain.synthesis import (
    ClonePromptRequest,
    CreateVoiceRequest,
    DesignVoiceRequest,
    JoinRequest,
    NormalizeRequest,
    SpeechFields,
    VoiceCloneRequest,
    output_format,
)
from shared.domain.voices import PROMPT_SUFFIX, REFERENCE_SUFFIX, SIDECAR_SUFFIX
from shared.usecases import completion
from shared.usecases.claims import claim_named
from shared.usecases.gateway import Gateway
from shared.usecases.ports import RunPodApi
from shared.usecases.routing import publish_job
from shared.usecases.webhooks import deliver_due
from shared.wire.messages import JobMessage
from shared.wire.runpod_io import RunPodInput, RunPodOutput, RunPodTask, SignedUrls
from shared.wire.runpod_status import RunPodStatus

log = logging.getLogger(__name__)

LEASE_GRACE_S = 120
"""Beyond RunPod's own limits, or beyond the call to RunPod, before the lease counts as lost."""


class Dispatch(StrEnum):
    DISPATCHED = "dispatched"
    SKIPPED = "skipped"
    FAILED = "failed"
    RETRY = "retry"
    """Released for another attempt: the entry point makes Pub/Sub redeliver."""


class Completion(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    PENDING = "pending"
    STALE = "stale"
    """Not the RunPod job this gateway job waits for, or the job is finished already."""


def dispatcher_id(gw: Gateway) -> str:
    return f"runpod:{gw.settings.runpod.endpoint_id}"


def dispatch(gw: Gateway, runpod: RunPodApi, message: JobMessage) -> Dispatch:
    rp = gw.settings.runpod
    worker = dispatcher_id(gw)
    try:
        job = claim_named(
            gw,
            message.job_id,
            lambda j: j.claim(
                worker,
                backend=rp.backend_id,
                now=gw.clock(),
                lease_s=rp.call_budget_s + LEASE_GRACE_S,
            ),
        )
    except (NotFound, InvalidTransition) as exc:
        log.info("dispatch skipped", extra={"job_id": message.job_id, "reason": exc.message})
        return Dispatch.SKIPPED
    job = deliver_due(gw, job)  # the "start" webhook, if the caller asked for one
    try:
        task_input = runpod_input(gw, job)
        runpod_id = runpod.run(
            payload=task_input.model_dump(mode="json"),
            webhook=webhook_url(gw, job.id),
            execution_timeout_s=rp.execution_timeout_s,
            ttl_s=rp.ttl_s,
        )
    except RunPodRejected as exc:
        error = _error(exc.code, exc.message)
        completion.fail(gw, job, worker=worker, error=error)
        return Dispatch.FAILED
    except TransientError as exc:
        return _retry_or_fail(gw, job, worker=worker, code=exc.code, message=exc.message)
    # InvalidTransition: the webhook already finished the job, RunPod being faster than this.
    with suppress(InvalidTransition):
        gw.jobs.update(
            job.id,
            lambda j: j.dispatched(
                worker,
                attempt=job.attempts,
                runpod_id=runpod_id,
                now=gw.clock(),
                lease_s=rp.ttl_s + rp.execution_timeout_s + LEASE_GRACE_S,
            ),
        )
    log.info("job dispatched to runpod", extra={"job_id": job.id, "runpod_id": runpod_id})
    return Dispatch.DISPATCHED


def complete(gw: Gateway, *, job_id: str, status: RunPodStatus) -> Completion:
    """Finish a job from RunPod's view of it (webhook or ``/status``)."""
    worker = dispatcher_id(gw)
    job = _waiting_on(gw.jobs.get(job_id), worker=worker, runpod_id=status.id)
    if job is None:
        return Completion.STALE
    if not status.finished:
        return Completion.PENDING
    if not status.succeeded:
        message = f"RunPod job {status.id} ended {status.status}: {status.error or 'no detail'}"
        outcome = _retry_or_fail(gw, job, worker=worker, code="runpod_failed", message=message)
        return _completed(gw, job.id, outcome)
    try:
        output = RunPodOutput.model_validate(status.output)
    except ValidationError as exc:
        detail = exc.errors()[0]["msg"]
        error = _error("runpod_bad_output", f"RunPod returned no task output: {detail}")
        completion.fail(gw, job, worker=worker, error=error)
        return Completion.FAILED
    if output.job_id != job.id:
        return Completion.STALE  # another gateway job's result: never applied to this one
    if output.failure is not None:
        failure = output.failure
        if failure.retryable:
            # A RunPod worker whose CUDA context broke says so and is replaced: the job did
            # not fail, and the attempt is not counted (within MAX_SPARED_FAULTS).
            outcome = _retry_or_fail(
                gw,
                job,
                worker=worker,
                code=failure.code,
                message=failure.message,
                spare=failure.code == WorkerPoisoned.code,
            )
            return _completed(gw, job.id, outcome)
        error = _error(failure.code, failure.message)
        completion.fail(gw, job, worker=worker, error=error)
        return Completion.FAILED
    try:
        trusted = _trusted_output(gw, job, output)
    except RunPodBadOutput as exc:
        completion.fail(gw, job, worker=worker, error=_error(exc.code, exc.message))
        return Completion.FAILED
    if completion.succeed(gw, job, worker=worker, output=trusted):
        return Completion.SUCCEEDED
    return Completion.STALE


def _trusted_output(gw: Gateway, job: Job, output: RunPodOutput) -> JobOutput:
    """What the gateway records of a RunPod result. Where the audio lies is derived from the
    job (the object this attempt's signed URL could write), never taken from the worker: a
    worker that named another object would otherwise have the job serve, and the gateway sign,
    any object in the bucket. Its format must be the one asked for."""
    if output.audio is None:
        return JobOutput(voice_id=output.voice_id)
    fmt = output_format(job.request)
    if fmt is None or output.audio.format is not fmt:
        raise RunPodBadOutput(
            f"RunPod returned {output.audio.format} audio for a job that asked for {fmt}"
        )
    path = audio_object_name(
        prefix=gw.settings.audio_prefix, job_id=job.id, attempt=job.attempts, fmt=fmt
    )
    audio = output.audio.model_copy(
        update={
            "uri": f"gs://{gw.settings.bucket}/{path}",
            "content_type": FORMATS[fmt].content_type,
        }
    )
    return JobOutput(audio=audio, voice_id=output.voice_id)


def lost(gw: Gateway, *, job_id: str, runpod_id: str) -> Completion:
    """RunPod no longer knows the job it ran for this one: run it again, within its attempts."""
    worker = dispatcher_id(gw)
    job = _waiting_on(gw.jobs.get(job_id), worker=worker, runpod_id=runpod_id)
    if job is None:
        return Completion.STALE
    message = f"RunPod has no record of job {runpod_id} (purged, or never queued)"
    outcome = _retry_or_fail(gw, job, worker=worker, code=RunPodJobGone.code, message=message)
    return _completed(gw, job.id, outcome)


# -- webhook authentication ----------------------------------------------------------------


def webhook_token(gw: Gateway, job_id: str) -> str:
    """Per job: a leaked webhook URL can only ever report on that one job."""
    secret = gw.settings.runpod.webhook_secret.get_secret_value()
    if not secret:
        raise ConfigurationError("TTS_RUNPOD__WEBHOOK_SECRET is not set")
    return hmac.new(secret.encode(), job_id.encode(), hashlib.sha256).hexdigest()


def verify_webhook(gw: Gateway, *, job_id: str, token: str) -> None:
    # compare_digest takes str only when both are ASCII (it raises TypeError otherwise), and
    # the token comes from the caller's URL: anything else is simply not our token.
    if not token.isascii() or not hmac.compare_digest(webhook_token(gw, job_id), token):
        raise Unauthenticated("bad webhook token")


def webhook_url(gw: Gateway, job_id: str) -> str | None:
    base = gw.settings.runpod.webhook_url
    if not base:
        return None  # no webhook: the monitor polls /status
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}job={job_id}&token={webhook_token(gw, job_id)}"


# -- the task RunPod receives --------------------------------------------------------------


def runpod_input(gw: Gateway, job: Job) -> RunPodInput:
    """The task plus signed URLs for exactly the objects its mode reads and writes."""
    settings = gw.settings
    # Valid for as long as RunPod may hold the job (queue + execution), never past an hour.
    ttl = min(settings.runpod.ttl_s + settings.runpod.execution_timeout_s, 3600)

    def sign(path: str, method: str = "GET") -> str:
        return gw.blobs.signed_url(path, ttl_s=ttl, method=method)

    request = job.request
    urls: dict[str, str] = {}
    extra: dict[str, object] = {}
    fmt = output_format(request)
    parts: tuple[str, ...] = ()
    if fmt is not None:
        path = audio_object_name(
            prefix=settings.audio_prefix, job_id=job.id, attempt=job.attempts, fmt=fmt
        )
        urls["audio"] = sign(path, "PUT")
        extra["audio_uri"] = f"gs://{settings.bucket}/{path}"
        extra["audio_content_type"] = FORMATS[fmt].content_type
        if isinstance(request, SpeechFields) and request.stream:
            parts = tuple(
                sign(
                    part_object_name(
                        prefix=settings.audio_prefix,
                        job_id=job.id,
                        attempt=job.attempts,
                        index=i,
                        fmt=fmt,
                    ),
                    "PUT",
                )
                for i in range(settings.runpod.stream_parts)
            )
    sources: tuple[str, ...] = ()
    match request:
        case JoinRequest():
            sources = tuple(sign(source.path) for source in request.sources)
        case VoiceCloneRequest() | CreateVoiceRequest():
            urls["reference"] = sign(request.reference.path)
        case NormalizeRequest():
            urls["reference"] = sign(request.source.path)
        case ClonePromptRequest():
            voice = gw.voices.get(request.voice_id)
            if voice is None or not voice.active:
                raise RunPodRejected(f"voice {request.voice_id} is not active")
            urls["prompt"] = sign(voice.object_name)
            extra["prompt_generation"] = voice.generation
        case _:
            pass
    if isinstance(request, CreateVoiceRequest | DesignVoiceRequest):
        stem = f"{settings.voices.prefix}{job.id}"
        urls["voice_prompt"] = sign(f"{stem}{PROMPT_SUFFIX}", "PUT")
        urls["voice_sidecar"] = sign(f"{stem}{SIDECAR_SUFFIX}", "PUT")
        # Kept beside the prompt: the uploaded clip, or the designed line (always WAV).
        extension = (
            request.reference.container.value
            if isinstance(request, CreateVoiceRequest)
            else FORMATS[AudioFormat.WAV].extension
        )
        extra["voice_reference_path"] = f"{stem}{REFERENCE_SUFFIX}.{extension}"
        urls["voice_reference"] = sign(f"{stem}{REFERENCE_SUFFIX}.{extension}", "PUT")
    return RunPodInput.model_validate(
        {
            "task": RunPodTask(id=job.id, owner=job.owner, request=request, attempt=job.attempts),
            "urls": SignedUrls(**urls, parts=parts, sources=sources),
            **extra,
        }
    )


# -- helpers -------------------------------------------------------------------------------


def _waiting_on(job: Job | None, *, worker: str, runpod_id: str) -> Job | None:
    """The job, if it is still running on RunPod under ``runpod_id`` (or under an id not yet
    recorded: RunPod can answer before the dispatcher has written it down)."""
    if (
        job is None
        or job.state is not JobState.RUNNING
        or job.lease is None
        or job.lease.owner != worker
        or (job.runpod_id is not None and job.runpod_id != runpod_id)
    ):
        return None
    return job


def _retry_or_fail(
    gw: Gateway, job: Job, *, worker: str, code: str, message: str, spare: bool = False
) -> Dispatch:
    attempts = gw.settings.runpod.max_attempts
    if job.tries >= attempts and not (spare and job.fault_spared):
        error = _error(code, f"gave up after {job.tries} attempts: {message}")
        completion.fail(gw, job, worker=worker, error=error)
        return Dispatch.FAILED
    error = JobError(code=code, message=message, retryable=True)
    if completion.release(gw, job, worker=worker, error=error, spare=spare):
        return Dispatch.RETRY
    return Dispatch.SKIPPED


def _completed(gw: Gateway, job_id: str, outcome: Dispatch) -> Completion:
    """After a RunPod-side failure, a released job is published again for a new dispatch."""
    if outcome is Dispatch.RETRY:
        released = gw.jobs.get(job_id)
        if released is not None:
            publish_job(gw, released)
        return Completion.RETRIED
    return Completion.FAILED if outcome is Dispatch.FAILED else Completion.STALE


def _error(code: str, message: str) -> JobError:
    return JobError(code=code, message=message)
