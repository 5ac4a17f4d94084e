"""The voice library: list, read, change, delete, package and import registered voices.

Listing reads the active voices once (bounded by ``voices.max_list``), then filters and pages
in memory: Firestore has no text search, and a voice library is hundreds of entries, not
millions. Built-in speakers are listed first, marked ``builtin``.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.domain.audio_input import CONTENT_TYPES, AudioContainer, sniff_container
from shared.domain.catalog import BUILTIN_SPEAKERS
from shared.domain.errors import Forbidden, InvalidRequest, NotFound, PayloadTooLarge
from shared.domain.keys import Principal
from shared.domain.synthesis import RefText, VoiceTraits
from shared.domain.voices import (
    PROMPT_SUFFIX,
    REFERENCE_SUFFIX,
    Voice,
    VoiceState,
    prompt_object_name,
    voice_id_for,
)
from shared.usecases.gateway import Gateway
from shared.wire.bodies import VoiceFields, VoicePatch

MAX_PAGE_SIZE = 200
MAX_QUERY_CHARS = 200
PACKAGE_PROMPT = "prompt.pt"
PACKAGE_METADATA = "voice.json"
PACKAGE_REFERENCE = "reference"
"""``reference.<ext>`` inside a package."""
MAX_PACKAGE_MEMBERS = 3


class PackageMetadata(VoiceFields):
    """``voice.json`` in a package; fields this version does not know are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    ref_text: RefText | None = None


@dataclass(frozen=True, kw_only=True)
class VoiceFilter:
    character: str | None = None
    emotion: str | None = None
    tag: str | None = None
    query: str | None = None
    include_builtin: bool = True


class BuiltinSpeaker(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str


@dataclass(frozen=True, kw_only=True)
class VoicePage:
    builtins: tuple[BuiltinSpeaker, ...]
    voices: tuple[Voice, ...]
    next_page_token: str | None


def list_voices(
    gw: Gateway,
    *,
    principal: Principal,
    where: VoiceFilter,
    page_size: int = 50,
    page_token: str | None = None,
) -> VoicePage:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"page_size must be 1..{MAX_PAGE_SIZE}", field="page_size")
    if where.query is not None and len(where.query) > MAX_QUERY_CHARS:
        raise InvalidRequest(f"q has at most {MAX_QUERY_CHARS} characters", field="q")
    offset = _offset(page_token)
    builtins: list[BuiltinSpeaker] = []
    if where.include_builtin and not (where.character or where.emotion or where.tag):
        builtins = [
            BuiltinSpeaker(name=s)
            for s in BUILTIN_SPEAKERS
            if not where.query or where.query.casefold() in s.casefold()
        ]
    stored = gw.voices.query(
        character=where.character,
        emotion=where.emotion,
        tag=where.tag,
        limit=gw.settings.voices.max_list,
    )
    voices = sorted(
        (
            v
            for v in stored
            if principal.may_see_voice(v.owner) and (not where.query or v.matches(where.query))
        ),
        key=lambda v: (v.name.casefold(), v.id),
    )
    entries: list[BuiltinSpeaker | Voice] = [*builtins, *voices]
    page = entries[offset : offset + page_size]
    more = offset + page_size < len(entries)
    return VoicePage(
        builtins=tuple(e for e in page if isinstance(e, BuiltinSpeaker)),
        voices=tuple(e for e in page if isinstance(e, Voice)),
        next_page_token=_token(offset + page_size) if more else None,
    )


def builtin_speaker(voice_id: str) -> BuiltinSpeaker | None:
    """Built-in speakers are addressed by their lower-case name (``vivian``, ``uncle_fu``)."""
    name = next((s for s in BUILTIN_SPEAKERS if s.lower() == voice_id.lower()), None)
    return BuiltinSpeaker(name=name) if name else None


def get_voice(gw: Gateway, *, principal: Principal, voice_id: str) -> Voice:
    voice = gw.voices.get(voice_id) if voice_id.isalnum() and len(voice_id) <= 64 else None
    # Someone else's voice is indistinguishable from a missing one; so is a deleted one.
    if (
        voice is None
        or voice.state is VoiceState.DELETED
        or not principal.may_see_voice(voice.owner)
    ):
        raise NotFound(f"no voice {voice_id!r}")
    return voice


def update_voice(gw: Gateway, *, principal: Principal, voice_id: str, patch: VoicePatch) -> Voice:
    _changeable(get_voice(gw, principal=principal, voice_id=voice_id), principal)
    changes = patch.model_dump(exclude_unset=True)
    now = gw.clock()

    trait_changes = {k: v for k, v in changes.items() if k != "name"}
    if "tags" in trait_changes:
        trait_changes["tags"] = tuple(trait_changes["tags"] or ())

    def apply(current: Voice | None) -> Voice | None:
        if current is None or current.state is VoiceState.DELETED:
            raise NotFound(f"no voice {voice_id!r}")
        traits = VoiceTraits.model_validate({**current.traits.model_dump(), **trait_changes})
        name = changes.get("name") or current.name
        return current.model_copy(update={"name": name, "traits": traits, "updated_at": now})

    updated = gw.voices.update(voice_id, apply)
    assert updated is not None
    return updated


def delete_voice(gw: Gateway, *, principal: Principal, voice_id: str) -> None:
    """Remove the prompt, its reference audio, its sidecar, and the record."""
    voice = _changeable(get_voice(gw, principal=principal, voice_id=voice_id), principal)
    stem = voice.object_name.removesuffix(PROMPT_SUFFIX)
    for path in (voice.object_name, voice.reference_path, f"{stem}.json"):
        if path:
            gw.blobs.delete(path)
    # The storage delete event that follows finds no record and changes nothing.
    gw.voices.delete(voice_id)


def package_voice(gw: Gateway, *, principal: Principal, voice_id: str) -> tuple[str, bytes]:
    """A zip of the prompt, the reference audio and the metadata: (file name, bytes)."""
    voice = get_voice(gw, principal=principal, voice_id=voice_id)
    if not voice.active:
        raise NotFound(f"voice {voice_id} is {voice.state}")
    metadata = {
        "name": voice.name,
        "ref_text": voice.ref_text,
        "x_vector_only": voice.x_vector_only,
        "model": voice.model,
        **voice.traits.model_dump(mode="json", exclude_none=True),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(PACKAGE_METADATA, json.dumps(metadata, indent=2))
        archive.writestr(PACKAGE_PROMPT, gw.blobs.get(voice.object_name))
        if voice.reference_path:
            extension = voice.reference_path.rsplit(".", 1)[-1]
            archive.writestr(f"{PACKAGE_REFERENCE}.{extension}", gw.blobs.get(voice.reference_path))
    safe_name = "".join(c if c.isalnum() or c in "-_" else "_" for c in voice.name)
    return f"{safe_name or voice.id}.zip", buffer.getvalue()


def import_voice(gw: Gateway, *, principal: Principal, package: bytes) -> str:
    """Put a package's files in the bucket; the storage event registers the voice.

    Returns the id the voice will have. The prompt is validated by the registry, not here:
    the API never unpickles anything.
    """
    limits = gw.settings.voices
    if len(package) > limits.max_prompt_bytes + limits.max_audio_bytes + 65_536:
        raise PayloadTooLarge("the package is too large", field="package")
    members = _read_package(package, max_member_bytes=limits.max_prompt_bytes)
    if PACKAGE_PROMPT not in members or PACKAGE_METADATA not in members:
        raise InvalidRequest(
            f"a package needs {PACKAGE_PROMPT} and {PACKAGE_METADATA}", field="package"
        )
    try:
        metadata = PackageMetadata.model_validate_json(members[PACKAGE_METADATA])
    except ValidationError as exc:
        raise InvalidRequest(
            f"{PACKAGE_METADATA}: {exc.errors()[0]['msg']}", field="package"
        ) from exc
    stem = gw.new_id()
    prefix = limits.prefix
    object_metadata = {"name": metadata.name, "owner": principal.owner}
    if metadata.ref_text:
        object_metadata["ref_text"] = metadata.ref_text
    reference = next((m for m in members if m.startswith(f"{PACKAGE_REFERENCE}.")), None)
    if reference is not None:
        container = sniff_container(members[reference])
        if container is None:
            raise InvalidRequest("the package's reference audio is not audio", field="package")
        path = f"{prefix}{stem}{REFERENCE_SUFFIX}.{container.value}"
        gw.blobs.put(path, members[reference], content_type=CONTENT_TYPES[container])
        object_metadata["reference_path"] = path
    sidecar = {
        **metadata.traits().model_dump(mode="json", exclude_none=True),
        **object_metadata,
    }
    gw.blobs.put(
        f"{prefix}{stem}.json", json.dumps(sidecar).encode(), content_type="application/json"
    )
    name = prompt_object_name(prefix=prefix, stem=stem)
    gw.blobs.put(name, members[PACKAGE_PROMPT], content_type="application/octet-stream")
    return voice_id_for(bucket=gw.settings.voices_bucket, object_name=name)


def _read_package(package: bytes, *, max_member_bytes: int) -> dict[str, bytes]:
    allowed = {PACKAGE_PROMPT, PACKAGE_METADATA} | {
        f"{PACKAGE_REFERENCE}.{c.value}" for c in AudioContainer
    }
    try:
        with zipfile.ZipFile(io.BytesIO(package)) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_PACKAGE_MEMBERS or any(i.filename not in allowed for i in infos):
                raise InvalidRequest(f"a package holds only {sorted(allowed)}", field="package")
            # Sizes come from the archive's directory: refuse before inflating anything.
            if any(i.file_size > max_member_bytes for i in infos):
                raise PayloadTooLarge("a package member is too large", field="package")
            return {i.filename: archive.read(i) for i in infos}
    except zipfile.BadZipFile as exc:
        raise InvalidRequest("the package is not a zip file", field="package") from exc


def _changeable(voice: Voice, principal: Principal) -> Voice:
    if not principal.may_change_voice(voice.owner):
        raise Forbidden("only the voice's owner or an admin may change it")
    return voice


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(token.encode()).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("page_token is not one this API issued", field="page_token") from exc
    if offset < 0:
        raise InvalidRequest("page_token is not one this API issued", field="page_token")
    return offset


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()
