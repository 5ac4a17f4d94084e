"""The core use cases behind the HTTP API and the Pub/Sub intake.

Entry points parse their input into typed requests, call one function here, and map the
outcome. Nothing here knows about HTTP or Flask.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.audio_input import (
    CONTENT_TYPES,
    AudioContainer,
    declared_duration_s,
    sniff_container,
)
from shared.auth import Principal
from shared.backends import BackendConfig
from shared.bodies import (
    CastBody,
    ClonePromptBody,
    CreateVoiceBody,
    NormalizeBody,
    SpeechBody,
    VoiceCloneBody,
)
from shared.casting import cast_instruct
from shared.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge, TransientError
from shared.jobs import Job, JobState
from shared.messages import JobMessage, job_attributes
from shared.ports import (
    ApiKeyStore,
    BackendStore,
    BlobStore,
    Clock,
    EventLog,
    JobStore,
    Publisher,
    VoiceStore,
)
from shared.routing import choose_backend
from shared.settings import Settings
from shared.synthesis import (
    MAX_NAME_CHARS,
    MAX_SEED,
    AudioRef,
    CastRequest,
    ClonePromptRequest,
    CreateVoiceRequest,
    DesignVoiceRequest,
    JobRequest,
    NormalizeRequest,
    VoiceCloneRequest,
    VoiceTraits,
)
from shared.voices import Voice, prompt_object_name, voice_id_for

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY_CHARS = 200


def _random_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, kw_only=True)
class Gateway:
    """Everything the core needs, built once per process by a ``bootstrap()``."""

    settings: Settings
    jobs: JobStore
    blobs: BlobStore
    publisher: Publisher
    keys: ApiKeyStore
    backends: BackendStore
    voices: VoiceStore
    events: EventLog
    clock: Clock
    new_id: Callable[[], str] = field(default=_random_id)


def submit_job(
    gw: Gateway,
    *,
    principal: Principal,
    request: SpeechBody,
    idempotency_key: str | None = None,
) -> Job:
    """Turn a speech body into a job: store its reference audio, resolve its voice, submit."""
    limit = gw.settings.api.max_text_chars
    if len(request.text) > limit:
        raise InvalidRequest(
            f"text has {len(request.text)} characters; the limit is {limit}",
            field="text",
            details={"max_chars": limit},
        )
    job_id = _job_id(gw, owner=principal.owner, idempotency_key=idempotency_key)
    stored: JobRequest
    match request:
        case VoiceCloneBody():
            fields = request.model_dump(exclude={"mode", "ref_audio"})
            reference = _store_upload(
                gw,
                request.ref_audio,
                path=f"{_upload_dir(gw, job_id)}reference",
                field="ref_audio",
                max_duration_s=gw.settings.voices.max_reference_s,
            )
            stored = VoiceCloneRequest(**fields, reference=reference)
        case ClonePromptBody():
            voice = find_voice(gw, principal=principal, ref=request.voice)
            fields = request.model_dump(exclude={"mode", "voice"})
            stored = ClonePromptRequest(**fields, voice_id=voice.id)
        case _:
            stored = request
    return _submit(gw, job_id=job_id, principal=principal, request=stored, key=idempotency_key)


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
    job_id = _job_id(gw, owner=principal.owner, idempotency_key=idempotency_key)
    stem = job_id
    prefix = gw.settings.voices.prefix
    # Under uploads/ (which expires): the worker copies it beside the prompt when it succeeds.
    reference = _store_upload(
        gw,
        data,
        path=f"{_upload_dir(gw, job_id)}reference",
        field="ref_audio",
        max_duration_s=gw.settings.voices.max_reference_s,
    )
    request = CreateVoiceRequest(
        voice_id=voice_id_for(
            bucket=gw.settings.bucket, object_name=prompt_object_name(prefix=prefix, stem=stem)
        ),
        name=body.name,
        reference=reference,
        ref_text=body.ref_text,
        x_vector_only=body.x_vector_only,
        traits=body.traits(),
    )
    return _submit(gw, job_id=job_id, principal=principal, request=request, key=idempotency_key)


def normalize_audio(
    gw: Gateway,
    *,
    principal: Principal,
    body: NormalizeBody,
    idempotency_key: str | None = None,
) -> Job:
    job_id = _job_id(gw, owner=principal.owner, idempotency_key=idempotency_key)
    source = _store_upload(
        gw,
        body.audio,
        path=f"{_upload_dir(gw, job_id)}source",
        field="audio",
        max_duration_s=gw.settings.voices.max_normalize_s,
    )
    request = NormalizeRequest(
        source=source, target_lufs=body.target_lufs, peak_dbfs=body.peak_dbfs, format=body.format
    )
    return _submit(gw, job_id=job_id, principal=principal, request=request, key=idempotency_key)


def cast_voices(
    gw: Gateway,
    *,
    principal: Principal,
    body: CastBody,
    idempotency_key: str | None = None,
) -> Job:
    """Design one voice per emotion / intensity and lock each as a registered clone prompt.

    One parent job (no worker runs it) and one ``design_voice`` job per item; each child
    reports into the parent when it finishes, so the parent shows the progress.
    """
    limit = gw.settings.voices.max_cast_items
    if len(body.items) > limit:
        raise InvalidRequest(
            f"a cast has at most {limit} items", field="items", details={"max_items": limit}
        )
    parent_id = _job_id(gw, owner=principal.owner, idempotency_key=idempotency_key)
    prefix = gw.settings.voices.prefix
    child_ids = tuple(f"{parent_id}c{i}" for i in range(len(body.items)))
    children = [
        DesignVoiceRequest(
            text=item.text or body.text,
            language=body.language,
            seed=None if body.seed is None else (body.seed + index) % (MAX_SEED + 1),
            instruct=cast_instruct(
                body.base_description, emotion=item.emotion, intensity=item.intensity
            ),
            voice_id=voice_id_for(
                bucket=gw.settings.bucket,
                object_name=prompt_object_name(prefix=prefix, stem=child_id),
            ),
            name=f"{body.character} ({item.emotion}, {item.intensity})"[:MAX_NAME_CHARS],
            traits=VoiceTraits(
                character=body.character,
                emotion=item.emotion,
                intensity=item.intensity,
                description=body.base_description,
                tags=body.tags,
            ),
            parent_id=parent_id,
        )
        for index, (child_id, item) in enumerate(zip(child_ids, body.items, strict=True))
    ]
    # Route before storing anything: a cast no backend can run is refused whole.
    backend = route(gw, mode="design_voice")
    parent = _new_job(
        gw,
        job_id=parent_id,
        principal=principal,
        request=CastRequest(
            character=body.character,
            children=child_ids,
            fingerprint=hashlib.sha256(body.model_dump_json().encode()).hexdigest(),
        ),
        backend="",
        key=idempotency_key,
    )
    stored, created = gw.jobs.create(parent)
    if not created:
        stored = _existing(stored, request=parent.request)
    # Also on a retry: children a crashed first attempt never created are created now.
    for child_id, request in zip(child_ids, children, strict=True):
        child = _new_job(
            gw, job_id=child_id, principal=principal, request=request, backend=backend.id, key=None
        )
        child, _ = gw.jobs.create(child)
        if child.state is JobState.QUEUED:
            publish_job(gw, child)
    return stored


def _submit(
    gw: Gateway, *, job_id: str, principal: Principal, request: JobRequest, key: str | None
) -> Job:
    """Persist a job, then route and publish it. The job exists before anyone hears 'accepted'.

    A failed publish does not lose the job: it stays ``queued`` and the monitor re-publishes
    queued jobs that no worker picked up.
    """
    backend = route(gw, mode=request.mode)
    candidate = _new_job(
        gw, job_id=job_id, principal=principal, request=request, backend=backend.id, key=key
    )
    job, created = gw.jobs.create(candidate)
    if not created:
        job = _existing(job, request=request)
        if job.state is not JobState.QUEUED:
            return job
    publish_job(gw, job)
    return job


def route(gw: Gateway, *, mode: str, exclude: frozenset[str] = frozenset()) -> BackendConfig:
    configured = gw.settings.backends
    return choose_backend(
        configured,
        mode=mode,
        seen={b.id: gw.backends.get(b.id) for b in configured},
        now=gw.clock(),
        stale_after_s=gw.settings.monitor.stale_after_s,
        exclude=exclude,
    )


def _new_job(
    gw: Gateway,
    *,
    job_id: str,
    principal: Principal,
    request: JobRequest,
    backend: str,
    key: str | None,
) -> Job:
    now = gw.clock()
    return Job(
        id=job_id,
        owner=principal.owner,
        request=request,
        backend=backend,
        idempotency_key=key,
        created_at=now,
        updated_at=now,
        state_times={JobState.QUEUED: now},
    )


def _existing(job: Job, *, request: JobRequest) -> Job:
    if job.request != request:
        raise Conflict(
            "Idempotency-Key was already used for a different request",
            field="Idempotency-Key",
            details={"job_id": job.id},
        )
    return job


def _upload_dir(gw: Gateway, job_id: str) -> str:
    return f"{gw.settings.voices.upload_prefix}{job_id}/"


def _store_upload(
    gw: Gateway, data: bytes, *, path: str, field: str, max_duration_s: float
) -> AudioRef:
    """Check an uploaded clip's size, container and declared length; store it as
    ``<path>.<ext>``."""
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
    if duration is not None and duration > max_duration_s:
        raise InvalidRequest(
            f"{field} is {duration:.1f} s long; the limit is {max_duration_s:g} s",
            field=field,
            details={"max_duration_s": max_duration_s},
        )
    stored = gw.blobs.put(f"{path}.{container.value}", data, content_type=CONTENT_TYPES[container])
    return AudioRef(
        path=stored.uri.removeprefix(f"gs://{gw.settings.bucket}/"),
        container=container,
        bytes=len(data),
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
    wanted = ref.casefold()
    named = [
        v
        for v in gw.voices.query(limit=gw.settings.voices.max_list)
        if v.name.casefold() == wanted and principal.may_see_voice(v.owner)
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


def audio_url(gw: Gateway, *, principal: Principal, job_id: str) -> str:
    """A short-lived signed URL for a finished job's audio."""
    job = get_job(gw, principal=principal, job_id=job_id)
    if job.state is not JobState.SUCCEEDED or job.result is None:
        raise Conflict(
            f"job {job_id} is {job.state}; audio exists only once it has succeeded",
            details={"state": job.state.value},
        )
    path = job.result.uri.removeprefix(f"gs://{gw.settings.bucket}/")
    return gw.blobs.signed_url(path, ttl_s=gw.settings.api.signed_url_ttl_s)


def _job_id(gw: Gateway, *, owner: str, idempotency_key: str | None) -> str:
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
