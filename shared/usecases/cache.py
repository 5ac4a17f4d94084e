"""The content-addressed audio cache: the same request twice costs one synthesis.

A request is cacheable when it is seeded (the same seed on the same backend gives the same
audio) or its caller opts in. Its key is a hash of what decides the audio: the normalized text,
the voice (a built-in speaker; a design description; a registered voice by id and by the GCS
generation of its prompt, so an overwritten prompt never serves old audio; an uploaded clip by
the hash of its bytes), the backend (which fixes the model), every parameter, the format and the
seed, and the owner: a hit is only ever served back to the owner whose request made the audio,
admins included. Sharing across owners would save a synthesis now and then, but a hit (and its
``cached_from``) would tell one owner that another spoke these words with this seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from datetime import timedelta

from shared.domain.backends import API_VERSION
from shared.domain.errors import TransientError
from shared.domain.jobs import Job
from shared.domain.synthesis import (
    ClonePromptRequest,
    CustomVoiceRequest,
    JobRequest,
    SpeechFields,
    VoiceCloneRequest,
    VoiceDesignRequest,
)
from shared.usecases.gateway import Gateway
from shared.usecases.ports import CachedAudio

log = logging.getLogger(__name__)

AUDIO_MARGIN = timedelta(days=1)
"""An entry whose audio is this close to the lifecycle's deletion is not served."""


def cache_key(
    gw: Gateway, *, owner: str, request: JobRequest, backend: str, wanted: bool | None
) -> str | None:
    """The request's key, or ``None`` when its result may not be reused: ``wanted`` True lets
    an unseeded request share, False keeps even a seeded one apart (a fresh synthesis)."""
    if not isinstance(request, SpeechFields) or wanted is False:
        return None
    if request.seed is None and wanted is not True:
        return None
    match request:
        case CustomVoiceRequest():
            voice: list[object] = ["speaker", request.speaker, request.instruct]
        case VoiceDesignRequest():
            voice = ["design", request.instruct]
        case ClonePromptRequest():
            found = gw.voices.get(request.voice_id)
            if found is None:
                return None
            voice = ["prompt", found.id, found.generation]
        case VoiceCloneRequest():
            if request.reference.sha256 is None:
                return None
            voice = ["clip", request.reference.sha256, request.ref_text, request.x_vector_only]
        case _:
            return None
    material = {
        "api": API_VERSION,
        "backend": backend,
        # The models the backend last said it serves: a worker that changes them (a new
        # checkpoint under the same backend id) never serves audio of the old ones.
        "models": _models(gw, backend),
        "mode": request.mode.value,
        "text": _normalized(request.text),
        "voice": voice,
        "language": request.language.value,
        "format": request.format.value,
        "speed": request.speed,
        "max_new_tokens": request.max_new_tokens,
        "seed": request.seed,
        "scope": owner,
        # A checked job's audio may have re-made chunks, and it carries a report and word
        # timings an unchecked one lacks. Only named when asked, so unchecked keys stay as
        # they were.
        **({"verify": True} if request.verify else {}),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def lookup(gw: Gateway, key: str) -> CachedAudio | None:
    """A usable entry: one whose audio the bucket's lifecycle has not (nearly) deleted."""
    try:
        entry = gw.cache.get(key)
    except TransientError as exc:
        log.warning("cache unavailable: synthesizing", extra={"error": exc.message})
        return None
    keep = timedelta(days=gw.settings.retention.audio_days) - AUDIO_MARGIN
    if entry is None or gw.clock() - entry.created_at > keep:
        return None
    return entry


def remember(gw: Gateway, job: Job) -> None:
    """Keep a finished job's audio under its key (only for a job that ran, not one that hit)."""
    if job.cache_key is None or job.result is None or job.cached_from is not None:
        return
    try:
        gw.cache.put(
            CachedAudio(key=job.cache_key, job_id=job.id, result=job.result, created_at=gw.clock())
        )
    except TransientError as exc:
        log.warning("result not cached", extra={"job_id": job.id, "error": exc.message})


def _models(gw: Gateway, backend: str) -> list[str]:
    try:
        beat = gw.backends.get(backend)
    except TransientError:
        beat = None
    return sorted(beat.capabilities.models) if beat is not None else []


def _normalized(text: str) -> str:
    """Unicode-normalized, whitespace collapsed: the same words typed twice are one request."""
    return " ".join(unicodedata.normalize("NFC", text).split())
