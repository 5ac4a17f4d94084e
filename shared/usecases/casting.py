"""Casting: design one voice per emotion / intensity and lock each as a registered clone prompt.

One parent job (no worker runs it) and one ``design_voice`` job per item; each child reports
into the parent when it finishes, so the parent shows the progress.
"""

from __future__ import annotations

import hashlib

from shared.domain.casting import cast_instruct
from shared.domain.errors import InvalidRequest
from shared.domain.jobs import PARENT_BACKEND, Job, JobState
from shared.domain.keys import Principal
from shared.domain.modes import Mode
from shared.domain.synthesis import (
    MAX_NAME_CHARS,
    MAX_SEED,
    CastRequest,
    DesignVoiceRequest,
    VoiceTraits,
)
from shared.domain.voices import prompt_object_name, voice_id_for
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import existing_job, job_id_for
from shared.usecases.new_jobs import new_job
from shared.usecases.routing import publish_job, route
from shared.wire.bodies import CastBody


def cast_voices(
    gw: Gateway,
    *,
    principal: Principal,
    body: CastBody,
    idempotency_key: str | None = None,
) -> Job:
    limit = gw.settings.voices.max_cast_items
    if len(body.items) > limit:
        raise InvalidRequest(
            f"a cast has at most {limit} items", field="items", details={"max_items": limit}
        )
    parent_id = job_id_for(gw, owner=principal.owner, idempotency_key=idempotency_key)
    children = cast_children(gw, body=body, parent_id=parent_id)
    # Route before storing anything: a cast no backend can run is refused whole.
    backend = route(gw, mode=Mode.DESIGN_VOICE)
    request = CastRequest(
        character=body.character,
        children=tuple(children),
        fingerprint=hashlib.sha256(body.model_dump_json().encode()).hexdigest(),
    )
    parent = new_job(
        gw,
        job_id=parent_id,
        principal=principal,
        request=request,
        backend=PARENT_BACKEND,
        key=idempotency_key,
    )
    stored, created = gw.jobs.create(parent)
    if not created:
        stored = existing_job(stored, request=request)
    # Also on a retry: children a crashed first attempt never created are created now.
    for child_id, child_request in children.items():
        child = new_job(
            gw,
            job_id=child_id,
            principal=principal,
            request=child_request,
            backend=backend.id,
            key=None,
            parent_id=parent_id,
        )
        child, _ = gw.jobs.create(child)
        if child.state is JobState.QUEUED:
            publish_job(gw, child)
    return stored


def cast_children(gw: Gateway, *, body: CastBody, parent_id: str) -> dict[str, DesignVoiceRequest]:
    """One ``design_voice`` request per item, by child job id (the parent's id plus its index)."""
    prefix = gw.settings.voices.prefix
    children: dict[str, DesignVoiceRequest] = {}
    for index, item in enumerate(body.items):
        child_id = f"{parent_id}c{index}"
        children[child_id] = DesignVoiceRequest(
            text=item.text or body.text,
            language=body.language,
            seed=None if body.seed is None else (body.seed + index) % (MAX_SEED + 1),
            instruct=cast_instruct(
                body.base_description, emotion=item.emotion, intensity=item.intensity
            ),
            voice_id=voice_id_for(
                bucket=gw.settings.voices_bucket,
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
    return children
