"""Registering voice prompt files: the one path from "a ``.pt`` exists in the bucket" to
``voices/{id}``, whoever wrote the file.

Storage events arrive at least once and in any order. Every step is idempotent and ordered by
the object's GCS generation: a repeated or older event changes nothing, and the delete event
that GCS sends for the generation an overwrite replaced does not delete the new voice. A file
that fails validation is moved to the quarantine prefix and recorded with the reason; its
bytes are only ever read through ``torch.load(weights_only=True)``.

Validation goes past the file's structure: its codes, code groups and speaker embedding must
fit a Base model some backend advertises in its heartbeat (``ModelFacts``, read from the
loaded model's own config), and it may hold no more frames than the longest reference allowed.
While no backend has advertised a Base model, only the length is checked here; the worker
checks every file again against the model it has loaded before the file reaches the GPU.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import ValidationError

from shared.domain.backends import ModelFacts
from shared.domain.errors import InvalidVoiceFile, NotFound, PayloadTooLarge
from shared.domain.modes import ModelType
from shared.domain.synthesis import VoiceTraits
from shared.domain.voice_file import (
    VoicePromptFile,
    check_fits,
    check_length,
    loads,
    max_frames,
)
from shared.domain.voices import (
    PROMPT_SUFFIX,
    SIDECAR_SUFFIX,
    Voice,
    VoiceState,
    voice_id_for,
)
from shared.usecases.gateway import Gateway

log = logging.getLogger(__name__)

_TRAIT_KEYS = tuple(k for k in VoiceTraits.model_fields if k != "tags")
"""The single-valued traits; ``tags`` is a list and travels comma-joined in metadata."""


@dataclass(frozen=True, kw_only=True)
class StoredObject:
    """What a storage event says about one object generation."""

    bucket: str
    name: str
    generation: int
    size: int
    md5: str | None = None
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


class Registration(StrEnum):
    REGISTERED = "registered"
    UPDATED = "updated"
    STALE = "stale"
    """A repeated or out-of-order event for a generation already handled."""
    IGNORED = "ignored"
    """Not a voice file (outside the prefix, or another file type)."""
    QUARANTINED = "quarantined"
    DELETED = "deleted"


def on_object_finalized(
    gw: Gateway, obj: StoredObject, *, data: bytes | None = None
) -> Registration:
    """Register (or update) the voice for a finalized object. ``data``: its bytes, if in hand."""
    prefix = gw.settings.voices.prefix
    if obj.bucket != gw.settings.voices_bucket or not obj.name.startswith(prefix):
        return Registration.IGNORED
    if obj.name.endswith(SIDECAR_SUFFIX):
        return _apply_sidecar(gw, obj)
    if not obj.name.endswith(PROMPT_SUFFIX):
        return Registration.IGNORED

    voice_id = voice_id_for(bucket=obj.bucket, object_name=obj.name)
    current = gw.voices.get(voice_id)
    if current is not None and current.generation >= obj.generation:
        return Registration.STALE
    try:
        prompt = _load(gw, obj, data)
        _check_models(gw, prompt)
    except InvalidVoiceFile as exc:
        return _quarantine(gw, obj, voice_id=voice_id, error=exc)
    except NotFound:
        # Overwritten or deleted since the event was sent; the newer event does the work.
        return Registration.STALE

    fields = _merged_fields(prompt.metadata, _sidecar(gw, obj.name), obj.metadata)
    now = gw.clock()

    def register(existing: Voice | None) -> Voice | None:
        if existing is not None and existing.generation >= obj.generation:
            return None
        return Voice(
            id=voice_id,
            name=fields.get("name") or _stem(obj.name, prefix),
            owner=fields.get("owner") or None,
            bucket=obj.bucket,
            object_name=obj.name,
            generation=obj.generation,
            size=obj.size,
            md5=obj.md5,
            model=fields.get("model") or prompt.model,
            x_vector_only=prompt.items[0].x_vector_only_mode,
            ref_text=fields.get("ref_text") or prompt.items[0].ref_text,
            reference_path=fields.get("reference_path") or None,
            traits=_traits(fields),
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )

    stored = gw.voices.update(voice_id, register)
    if stored is None or stored.generation != obj.generation:
        return Registration.STALE
    outcome = Registration.UPDATED if current is not None else Registration.REGISTERED
    log.info(
        "voice %s",
        outcome.value,
        extra={"voice_id": voice_id, "object": obj.name, "generation": obj.generation},
    )
    return outcome


def on_object_deleted(gw: Gateway, obj: StoredObject) -> Registration:
    """Mark the voice deleted when *its* generation goes away (not a replaced older one)."""
    if not obj.name.endswith(PROMPT_SUFFIX) or not obj.name.startswith(gw.settings.voices.prefix):
        return Registration.IGNORED
    voice_id = voice_id_for(bucket=obj.bucket, object_name=obj.name)
    now = gw.clock()

    def mark_deleted(existing: Voice | None) -> Voice | None:
        changed.clear()
        if existing is None or existing.generation != obj.generation or not existing.active:
            return None
        changed.append(existing.id)
        return existing.model_copy(update={"state": VoiceState.DELETED, "updated_at": now})

    # A transaction may run its function more than once; each run resets the flag, so it
    # reflects the run that committed.
    changed: list[str] = []
    gw.voices.update(voice_id, mark_deleted)
    if not changed:
        return Registration.STALE
    log.info("voice deleted", extra={"voice_id": voice_id, "object": obj.name})
    return Registration.DELETED


# -- steps ------------------------------------------------------------------------------------


def _load(gw: Gateway, obj: StoredObject, data: bytes | None) -> VoicePromptFile:
    limit = gw.settings.voices.max_prompt_bytes
    if obj.size > limit:
        # Decided from the event alone: an oversized file is never downloaded.
        raise InvalidVoiceFile(f"{obj.size} bytes exceeds {limit}", reason="too_large")
    if data is None:
        try:
            data = gw.blobs.get(obj.name, max_bytes=limit)
        except PayloadTooLarge as exc:
            raise InvalidVoiceFile(exc.message, reason="too_large") from exc
    return loads(data, max_bytes=limit)


def _check_models(gw: Gateway, prompt: VoicePromptFile) -> None:
    """The file must fit at least one Base model a backend advertises (a job for the voice
    goes to a backend that has a Base model; one whose model it does not fit refuses it)."""
    frames = max_frames(gw.settings.voices.max_reference_s)
    check_length(prompt, frames=frames)
    models = _base_models(gw)
    refusals: list[InvalidVoiceFile] = []
    for facts in models:
        try:
            check_fits(prompt, facts, frames=frames)
        except InvalidVoiceFile as exc:
            refusals.append(exc)
        else:
            return
    if refusals:
        reasons = sorted({exc.reason for exc in refusals})
        raise InvalidVoiceFile(
            "fits no model the backends serve: " + "; ".join(exc.message for exc in refusals),
            reason=reasons[0] if len(reasons) == 1 else "model_mismatch",
        )


def _base_models(gw: Gateway) -> list[ModelFacts]:
    """The Base models the configured backends last advertised, each once."""
    found: dict[str, ModelFacts] = {}
    for backend in gw.settings.backends:
        beat = gw.backends.get(backend.id)
        if beat is None:
            continue
        for facts in beat.capabilities.model_facts:
            if facts.model_type == ModelType.BASE:
                found.setdefault(facts.model_dump_json(), facts)
    return list(found.values())


def _quarantine(
    gw: Gateway, obj: StoredObject, *, voice_id: str, error: InvalidVoiceFile
) -> Registration:
    destination = f"{gw.settings.voices.quarantine_prefix}{obj.name}"
    try:
        gw.blobs.copy(obj.name, destination)
        gw.blobs.delete(obj.name, if_generation=obj.generation)
    except NotFound:
        pass  # already moved by an earlier delivery of this event, or replaced meanwhile
    now = gw.clock()

    def record(existing: Voice | None) -> Voice | None:
        if existing is not None and existing.generation > obj.generation:
            return None
        return Voice(
            id=voice_id,
            name=obj.metadata.get("name") or _stem(obj.name, gw.settings.voices.prefix),
            owner=obj.metadata.get("owner") or None,
            bucket=obj.bucket,
            object_name=destination,
            generation=obj.generation,
            size=obj.size,
            md5=obj.md5,
            state=VoiceState.QUARANTINED,
            quarantine_reason=f"{error.reason}: {error.message}",
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )

    gw.voices.update(voice_id, record)
    log.warning(
        "voice file quarantined",
        extra={"object": obj.name, "generation": obj.generation, "reason": error.reason},
    )
    return Registration.QUARANTINED


def _apply_sidecar(gw: Gateway, obj: StoredObject) -> Registration:
    prompt_name = obj.name.removesuffix(SIDECAR_SUFFIX) + PROMPT_SUFFIX
    voice_id = voice_id_for(bucket=obj.bucket, object_name=prompt_name)
    fields = _sidecar(gw, prompt_name)
    if not fields:
        return Registration.IGNORED
    now = gw.clock()

    def apply(existing: Voice | None) -> Voice | None:
        changed.clear()
        if existing is None or not existing.active:
            return None
        merged = {**_fields_of(existing), **fields}
        name, traits = merged["name"], _traits(merged)
        if (name, traits) == (existing.name, existing.traits):
            return None  # the sidecar the worker wrote with the prompt: nothing new
        changed.append(existing.id)
        return existing.model_copy(update={"name": name, "traits": traits, "updated_at": now})

    changed: list[str] = []
    gw.voices.update(voice_id, apply)
    return Registration.UPDATED if changed else Registration.IGNORED


def _sidecar(gw: Gateway, prompt_name: str) -> dict[str, str]:
    """The optional ``<stem>.json`` beside a prompt: name, tags and traits, never code."""
    path = prompt_name.removesuffix(PROMPT_SUFFIX) + SIDECAR_SUFFIX
    try:
        raw = gw.blobs.get(path, max_bytes=gw.settings.voices.max_sidecar_bytes)
    except (NotFound, PayloadTooLarge):
        return {}
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        log.warning("ignoring unreadable sidecar", extra={"object": path})
        return {}
    if not isinstance(parsed, dict):
        return {}
    fields = {k: v for k, v in parsed.items() if isinstance(v, str)}
    if isinstance(parsed.get("tags"), list):
        fields["tags"] = ",".join(str(t) for t in parsed["tags"])
    return fields


def _merged_fields(*sources: Mapping[str, str]) -> dict[str, str]:
    """Later sources win: file metadata, then the sidecar, then the object's own metadata."""
    merged: dict[str, str] = {}
    for source in sources:
        merged.update({k: str(v) for k, v in source.items() if v is not None})
    return merged


def _fields_of(voice: Voice) -> dict[str, str]:
    fields = {"name": voice.name, "tags": ",".join(voice.traits.tags)}
    for key in _TRAIT_KEYS:
        value = getattr(voice.traits, key)
        if value:
            fields[key] = value
    return fields


def _traits(fields: Mapping[str, str]) -> VoiceTraits:
    tags = tuple(t.strip() for t in fields.get("tags", "").split(",") if t.strip())
    try:
        return VoiceTraits(
            **{k: fields[k] for k in _TRAIT_KEYS if fields.get(k)},
            tags=tags,
        )
    except ValidationError:
        # Metadata is descriptive; a bad tag list must not keep a valid prompt unregistered.
        log.warning("ignoring invalid voice metadata", extra={"fields": sorted(fields)})
        return VoiceTraits()


def _stem(object_name: str, prefix: str) -> str:
    return object_name.removeprefix(prefix).removesuffix(PROMPT_SUFFIX)
