"""Jobs: submit, read, and fetch the audio of the work callers ask for.

Entry points parse their input into typed bodies, call one function here, and map the
outcome. Nothing here knows about HTTP or Flask.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from shared.domain.audio_input import (
    CONTENT_TYPES,
    AudioContainer,
    declared_duration_s,
    sniff_container,
)
from shared.domain.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)
from shared.domain.jobs import Job, JobState
from shared.domain.keys import Principal
from shared.domain.synthesis import (
    AudioRef,
    ClonePromptRequest,
    CreateVoiceRequest,
    JobRequest,
    NormalizeRequest,
    VoiceCloneRequest,
    wants_checks,
)
from shared.domain.voices import Voice, prompt_object_name, voice_id_for
from shared.usecases import beside, cache, completion, delivery
from shared.usecases.delivery import AudioAhead
from shared.usecases.gateway import Gateway
from shared.usecases.new_jobs import NO_OPTIONS, new_job
from shared.usecases.per_call import per_call
from shared.usecases.routing import publish_job, route
from shared.wire.bodies import (
    ClonePromptBody,
    CreateVoiceBody,
    JobOptions,
    NormalizeBody,
    SpeechBody,
    VoiceCloneBody,
)

MAX_IDEMPOTENCY_KEY_CHARS = 200


def submit_job(
    gw: Gateway,
    *,
    principal: Principal,
    request: SpeechBody,
    idempotency_key: str | None = None,
    options: JobOptions = NO_OPTIONS,
) -> Job:
    """Turn a speech body into a job: store its reference audio, resolve its voice, submit."""
    return _speech(
        gw, principal=principal, request=request, idempotency_key=idempotency_key, options=options
    ).job


@dataclass(frozen=True, kw_only=True)
class Submitted:
    job: Job
    audio: AudioAhead | None = None
    """A cache hit's audio, read while its job was written; ``None`` for anything else (its
    audio is read once the job has finished, as ever)."""


def submit_for_audio(
    gw: Gateway,
    *,
    principal: Principal,
    request: SpeechBody,
    idempotency_key: str | None = None,
) -> Submitted:
    """``submit_job`` for a caller that waits in this call for the whole audio (the synchronous
    speech route): a cache hit is then answered in as few round trips as its data allows.

    A hit's audio is read while its job document is written (the read needs only the cache
    entry; the write needs only the request and the entry), and the answer waits for both, so
    ``GET /v1/jobs/{id}`` finds the job the moment the caller has its audio: a crash before
    the write lands answers nothing, and leaves nothing but a read thrown away. Its
    announcement (the results and reply topics, a webhook) goes out after the answer, on
    ``gw.tasks``: the job is written owing all of them (``result_pending``, ``reply_pending``,
    a webhook delivery due), so a process that dies before sending them, or is frozen after
    answering (Cloud Functions throttles an idle instance), leaves them owed on the record,
    and the monitor sends what is still owed after ``monitor.announce_grace_s``: late, never
    lost (subscribers dedupe on ``announcement_id`` already). Only where the caller has its
    answer from the response itself: the intake's callers hear of a job by its announcement,
    and that path still announces before it returns.
    """
    return _speech(
        gw, principal=principal, request=request, idempotency_key=idempotency_key, for_audio=True
    )


def _speech(
    gw: Gateway,
    *,
    principal: Principal,
    request: SpeechBody,
    idempotency_key: str | None,
    options: JobOptions = NO_OPTIONS,
    for_audio: bool = False,
) -> Submitted:
    gw = per_call(gw)  # its voice is read once, for the request and for the cache key
    job_id = job_id_for(gw, owner=principal.owner, idempotency_key=idempotency_key)
    stored = prepare_speech(gw, principal=principal, body=request, job_id=job_id)
    return _submit(
        gw,
        job_id=job_id,
        principal=principal,
        request=stored,
        key=idempotency_key,
        options=options,
        for_audio=for_audio,
    )


def prepare_speech(
    gw: Gateway, *, principal: Principal, body: SpeechBody, job_id: str
) -> JobRequest:
    """The stored request a speech body stands for: uploaded audio stored under the job's
    upload folder, a voice named by id or name resolved to its id."""
    limit = gw.settings.api.max_text_chars
    if len(body.text) > limit:
        raise InvalidRequest(
            f"text has {len(body.text)} characters; the limit is {limit}",
            field="text",
            details={"max_chars": limit},
        )
    match body:
        case VoiceCloneBody():
            upload = Upload(
                data=body.ref_audio,
                name="reference",
                field="ref_audio",
                max_duration_s=gw.settings.voices.max_reference_s,
            )
            reference = _store_upload(gw, upload, path=_upload_folder(gw, job_id))
            fields = body.model_dump(exclude={"mode", "ref_audio"})
            return VoiceCloneRequest(**fields, reference=reference)
        case ClonePromptBody():
            voice = find_voice(gw, principal=principal, ref=body.voice)
            fields = body.model_dump(exclude={"mode", "voice"})
            return ClonePromptRequest(**fields, voice_id=voice.id)
        case _:
            return body


def create_voice(
    gw: Gateway,
    *,
    principal: Principal,
    body: CreateVoiceBody,
    audio: bytes | None = None,
    idempotency_key: str | None = None,
) -> Job:
    """Accept reference audio; a worker builds the clone prompt and registers the voice."""
    data = body.ref_audio if body.ref_audio is not None else audio
    if data is None:
        raise InvalidRequest(
            "send the reference audio as ref_audio or a file part", field="ref_audio"
        )

    def build(job_id: str, reference: AudioRef) -> JobRequest:
        # The voice's files are named after the job, so a retried job rewrites the same ones.
        prompt = prompt_object_name(prefix=gw.settings.voices.prefix, stem=job_id)
        return CreateVoiceRequest(
            voice_id=voice_id_for(bucket=gw.settings.voices_bucket, object_name=prompt),
            name=body.name,
            reference=reference,
            ref_text=body.ref_text,
            x_vector_only=body.x_vector_only,
            traits=body.traits(),
        )

    return _submit_upload(
        gw,
        principal=principal,
        key=idempotency_key,
        upload=Upload(
            data=data,
            name="reference",
            field="ref_audio",
            max_duration_s=gw.settings.voices.max_reference_s,
        ),
        build=build,
    )


def normalize_audio(
    gw: Gateway,
    *,
    principal: Principal,
    body: NormalizeBody,
    idempotency_key: str | None = None,
) -> Job:
    return _submit_upload(
        gw,
        principal=principal,
        key=idempotency_key,
        upload=Upload(
            data=body.audio,
            name="source",
            field="audio",
            max_duration_s=gw.settings.voices.max_normalize_s,
        ),
        build=lambda _, source: NormalizeRequest(
            **body.model_dump(exclude={"audio"}), source=source
        ),
    )


def get_job(gw: Gateway, *, principal: Principal, job_id: str) -> Job:
    job = gw.jobs.get(job_id) if _plausible_id(job_id) else None
    # Someone else's job is indistinguishable from a missing one.
    if job is None or not principal.may_see(job.owner):
        raise NotFound(f"no job {job_id!r}")
    return job


def find_voice(gw: Gateway, *, principal: Principal, ref: str) -> Voice:
    """The active voice ``ref`` names, by id or else by (case-insensitive) name."""
    voice = gw.voices.get(ref) if ref.isalnum() and len(ref) <= 64 else None
    if voice is not None and voice.active and principal.may_see_voice(voice.owner):
        return voice
    named = [
        v
        for v in gw.voices.query(name=ref, limit=gw.settings.voices.max_list)
        if principal.may_see_voice(v.owner)
    ]
    if not named:
        raise NotFound(f"no voice {ref!r}", field="voice")
    if len(named) > 1:
        raise Conflict(
            f"{len(named)} voices are named {ref!r}; use a voice id",
            field="voice",
            details={"voice_ids": sorted(v.id for v in named)},
        )
    return named[0]


def cancel_job(gw: Gateway, *, principal: Principal, job_id: str) -> Job:
    """A queued job never runs; a running one stops at its next piece and its result is
    discarded; a finished one is a ``Conflict``. A cast or batch ends ``canceled`` and takes
    its unfinished children with it."""
    job = get_job(gw, principal=principal, job_id=job_id)
    canceled = completion.cancel(gw, job.id, reason="canceled by its owner")
    if canceled is None:
        current = gw.jobs.get(job.id) or job
        raise Conflict(
            f"job {job.id} is already {current.state}",
            details={"state": current.state.value},
        )
    completion.cancel_children(gw, canceled, reason=f"its parent {job.id} was canceled")
    return canceled


def list_jobs(
    gw: Gateway,
    *,
    principal: Principal,
    state: JobState | None = None,
    created_after: datetime | None = None,
    page_size: int = 50,
    page_token: str | None = None,
) -> JobPage:
    """The caller's jobs, oldest first, a page at a time."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"page_size must be 1..{MAX_PAGE_SIZE}", field="page_size")
    jobs = gw.jobs.list_owned(
        owner=principal.owner,
        state=state,
        created_after=created_after,
        start_after=_cursor(page_token),
        limit=page_size + 1,
    )
    more = len(jobs) > page_size
    page = tuple(jobs[:page_size])
    token = _token(page[-1]) if more else None
    return JobPage(jobs=page, next_page_token=token)


def audio_url(gw: Gateway, *, principal: Principal, job_id: str) -> str:
    """A short-lived signed URL for a finished job's audio."""
    job = get_job(gw, principal=principal, job_id=job_id)
    if job.state is not JobState.SUCCEEDED or job.result is None:
        raise Conflict(
            f"job {job_id} is {job.state}; audio exists only once it has succeeded",
            details={"state": job.state.value},
        )
    path = gw.object_path(job.result.uri)
    return gw.blobs.signed_url(path, ttl_s=gw.settings.api.signed_url_ttl_s)


# -- submitting ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Upload:
    """Audio a caller sent with a request, to be checked and stored before the job exists."""

    data: bytes
    name: str
    """The object's name in the job's upload folder, without extension."""
    field: str
    """The request field it came in, for error messages."""
    max_duration_s: float


def _submit_upload(
    gw: Gateway,
    *,
    principal: Principal,
    key: str | None,
    upload: Upload,
    build: Callable[[str, AudioRef], JobRequest],
    options: JobOptions = NO_OPTIONS,
) -> Job:
    """Store the upload under the job's folder in ``uploads/`` (which expires), then submit
    the request ``build`` makes from the job id and the stored audio."""
    job_id = job_id_for(gw, owner=principal.owner, idempotency_key=key)
    ref = _store_upload(gw, upload, path=_upload_folder(gw, job_id))
    request = build(job_id, ref)
    return _submit(
        gw, job_id=job_id, principal=principal, request=request, key=key, options=options
    ).job


def _submit(
    gw: Gateway,
    *,
    job_id: str,
    principal: Principal,
    request: JobRequest,
    key: str | None,
    options: JobOptions = NO_OPTIONS,
    for_audio: bool = False,
) -> Submitted:
    """Persist a job and publish it. The job exists before anyone hears 'accepted'.

    The message goes out beside the document's write, not after it: a caller who waits for the
    audio pays the longer of the two round trips, not their sum. A worker that hears of the job
    before the write lands looks again until it does (``claims.claim_named``); a write that
    fails leaves a message for a job that never was, which workers drop after that grace (the
    caller was answered with the error, and an idempotent retry writes the same job). A failed
    publish does not lose the job: it stays ``queued`` and the monitor re-publishes queued jobs
    that no worker picked up. ``for_audio``: see ``submit_for_audio``.
    """
    backend = route(gw, mode=request.mode, verify=wants_checks(request))
    candidate = new_job(
        gw,
        job_id=job_id,
        principal=principal,
        request=request,
        backend=backend.id,
        key=key,
        options=options,
    )
    hit = cache.lookup(gw, candidate.cache_key) if candidate.cache_key else None
    if hit is None:
        writing = gw.tasks.submit(lambda: gw.jobs.create(candidate))
        publish_job(gw, candidate)
        job, created = writing.result()
        # An idempotent retry finds its job: its message went out again, which a worker that
        # has the job already drops (a claim is taken once).
        return Submitted(job=job if created else existing_job(job, request=request))
    # A cache hit: the job is written finished, and answered without a worker.
    candidate = candidate.from_cache(result=hit.result, source=hit.job_id, now=gw.clock())
    ahead = delivery.read_ahead(gw, hit.result) if for_audio else None  # beside the write
    job, created = gw.jobs.create(candidate)
    if not created:
        # An idempotent retry: its job may be another than this hit (the read is then unused:
        # ``finished_audio`` takes it only for the object the job names), and may still be
        # queued, its first message perhaps lost: it goes out again.
        job = existing_job(job, request=request)
        if job.state is JobState.QUEUED:
            publish_job(gw, job)
            return Submitted(job=job)
    elif for_audio:
        done = job
        beside.after_answer(
            gw, lambda: completion.finished(gw, done), what="announcing a cache hit", job_id=done.id
        )
    else:
        completion.finished(gw, job)
    return Submitted(job=job, audio=ahead)


def existing_job(job: Job, *, request: JobRequest) -> Job:
    """The job an idempotent retry finds, provided it asked for the same thing."""
    if job.request != request:
        raise Conflict(
            "Idempotency-Key was already used for a different request",
            field="Idempotency-Key",
            details={"job_id": job.id},
        )
    return job


def _upload_folder(gw: Gateway, job_id: str) -> str:
    return f"{gw.settings.voices.upload_prefix}{job_id}/"


def _store_upload(gw: Gateway, upload: Upload, *, path: str) -> AudioRef:
    """Check an uploaded clip's size, container and declared length; store it as
    ``<path><name>.<ext>``."""
    data, field = upload.data, upload.field
    limit = gw.settings.voices.max_audio_bytes
    if len(data) > limit:
        raise PayloadTooLarge(
            f"{field} is {len(data)} bytes; the limit is {limit}",
            field=field,
            details={"max_bytes": limit},
        )
    container = sniff_container(data)
    if container is None:
        raise InvalidRequest(
            f"{field} is not audio in an accepted format",
            field=field,
            details={"accepted": [c.value for c in AudioContainer]},
        )
    duration = declared_duration_s(data, container)
    if duration is not None and duration > upload.max_duration_s:
        raise InvalidRequest(
            f"{field} is {duration:.1f} s long; the limit is {upload.max_duration_s:g} s",
            field=field,
            details={"max_duration_s": upload.max_duration_s},
        )
    object_path = f"{path}{upload.name}.{container.value}"
    gw.blobs.put(object_path, data, content_type=CONTENT_TYPES[container])
    digest = hashlib.sha256(data).hexdigest()
    return AudioRef(path=object_path, container=container, bytes=len(data), sha256=digest)


def job_id_for(gw: Gateway, *, owner: str, idempotency_key: str | None) -> str:
    """A fresh id, or one derived from the caller's idempotency key."""
    if idempotency_key is None:
        return gw.new_id()
    if not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidRequest(
            f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY_CHARS} characters",
            field="Idempotency-Key",
        )
    # Derived ids make a retried submit race-free: both attempts address the same document.
    return hashlib.sha256(f"{owner}\0{idempotency_key}".encode()).hexdigest()[:32]


def _plausible_id(job_id: str) -> bool:
    return 0 < len(job_id) <= 128 and job_id.isalnum()


@dataclass(frozen=True, kw_only=True)
class JobPage:
    jobs: tuple[Job, ...]
    next_page_token: str | None


MAX_PAGE_SIZE = 200


def _token(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _cursor(token: str | None) -> tuple[datetime, str] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token.encode()).decode()
        created, _, job_id = raw.partition("|")
        return datetime.fromisoformat(created), job_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("page_token is not one this API issued", field="page_token") from exc
