"""OpenAI-style speech: one call in OpenAI's (or vLLM-Omni's) shape becomes an ordinary job.

Which mode a call asks for follows from ``task_type`` when given, else from what it carries:
reference audio clones it; a built-in speaker (or an OpenAI voice name aliased onto one) speaks
with that speaker, ``instructions`` as the style; a registered voice speaks with its clone
prompt; no voice but ``instructions`` designs one. The Base model that speaks cloned voices
takes no instructions, so instructions with a cloned voice are refused, never dropped.
"""

from __future__ import annotations

import re
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from shared.domain.backends import BackendStatus
from shared.domain.catalog import BUILTIN_SPEAKERS
from shared.domain.errors import InvalidRequest, NotFound
from shared.domain.jobs import Job
from shared.domain.keys import Principal
from shared.domain.synthesis import CustomVoiceRequest, VoiceDesignRequest
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import Submitted, find_voice, submit_for_audio, submit_job
from shared.usecases.per_call import per_call
from shared.wire.bodies import ClonePromptBody, SpeechBody, VoiceCloneBody
from shared.wire.openai import ModelList, ModelView, SpeechCreateBody, TaskType

M = TypeVar("M", bound=BaseModel)

_TASK_IN_MODEL_NAME = {
    "customvoice": TaskType.CUSTOM_VOICE,
    "voicedesign": TaskType.VOICE_DESIGN,
    "base": TaskType.BASE,
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""A Hugging Face model id, ``owner/name``; anything else a worker loads is a directory."""


def task_in_model_name(model: str) -> TaskType | None:
    """The model type a model id names (vLLM-Omni serves one model, and clients send its id):
    ``Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign``, ``custom_voice``, ``x-Base-AWQ``. Matched as
    whole words (one, or two written apart: ``voice-design``), the last one named winning, so
    that ``database`` or ``tts-1-hd`` names none."""
    words = [w for w in re.split(r"[^0-9a-z]+", model.casefold()) if w]
    for end in range(len(words), 0, -1):
        for joined in (words[end - 1], "".join(words[max(end - 2, 0) : end])):
            task = _TASK_IN_MODEL_NAME.get(joined)
            if task is not None:
                return task
    return None


def submit_speech(
    gw: Gateway,
    *,
    principal: Principal,
    body: SpeechCreateBody,
    idempotency_key: str | None = None,
) -> Job:
    gw = per_call(gw)  # a voice named is read once, however often the call looks at it
    return submit_job(
        gw,
        principal=principal,
        request=speech_body(gw, principal=principal, body=body),
        idempotency_key=idempotency_key,
    )


def submit_speech_for_audio(
    gw: Gateway,
    *,
    principal: Principal,
    body: SpeechCreateBody,
    idempotency_key: str | None = None,
) -> Submitted:
    """``submit_speech`` for a call that answers with the whole audio (``submit_for_audio``)."""
    gw = per_call(gw)
    return submit_for_audio(
        gw,
        principal=principal,
        request=speech_body(gw, principal=principal, body=body),
        idempotency_key=idempotency_key,
    )


def speech_body(gw: Gateway, *, principal: Principal, body: SpeechCreateBody) -> SpeechBody:
    """The native speech body an OpenAI-style call stands for."""
    common: dict[str, object] = {
        "text": body.input,
        "language": body.language,
        "format": body.response_format,
        "seed": body.seed,
        "verify": body.verify,
        "speed": body.speed,
        "stream": body.streamed,
        "max_new_tokens": body.max_new_tokens,
    }
    voice = body.voice_name
    speaker = _speaker(gw, voice)
    match _task(body, speaker=speaker):
        case TaskType.CUSTOM_VOICE:
            if speaker is None:
                raise _unknown_voice(gw, voice)
            return _build(CustomVoiceRequest, common, speaker=speaker, instruct=body.instructions)
        case TaskType.VOICE_DESIGN:
            if body.instructions is None:
                raise InvalidRequest(
                    "designing a voice needs instructions that describe it",
                    field="instructions",
                )
            return _build(VoiceDesignRequest, common, instruct=body.instructions)
        case TaskType.BASE:
            if body.instructions is not None:
                raise InvalidRequest(
                    "a cloned voice speaks as it was recorded: the Base model takes no "
                    "instructions; drop them, or use a built-in speaker or voice design",
                    field="instructions",
                )
            if body.ref_audio is not None:
                return _build(
                    VoiceCloneBody,
                    common,
                    ref_audio=body.ref_audio,
                    ref_text=body.ref_text,
                    x_vector_only=body.x_vector_only_mode,
                )
            if voice is None:
                raise InvalidRequest(
                    "cloning needs ref_audio, or a registered voice as voice", field="voice"
                )
            try:
                registered = find_voice(gw, principal=principal, ref=voice)
            except NotFound:
                raise _unknown_voice(gw, voice) from None
            return _build(ClonePromptBody, common, voice=registered.id)


def list_models(gw: Gateway) -> ModelList:
    """What the backends that are up now can serve: the accepted names, then their models."""
    up = [
        beat
        for backend in gw.settings.backends
        if (beat := gw.backends.get(backend.id)) is not None and beat.status is BackendStatus.ONLINE
    ]
    if not up:
        return ModelList(data=())
    names = list(gw.settings.api.speech_models)
    names += sorted({model_id(m) for beat in up for m in beat.capabilities.models} - set(names))
    return ModelList(data=tuple(ModelView(id=name) for name in names))


def model_id(source: str) -> str:
    """What ``/v1/models`` calls a model a worker loaded from ``source``: a Hugging Face id
    (``owner/name``) as it is, a local directory by its folder's name (its path says where a
    worker's disk keeps it, nothing a client could use)."""
    if _HUB_ID.fullmatch(source):
        return source
    return re.split(r"[\\/]", source.rstrip("\\/"))[-1] or source


# -- helpers -------------------------------------------------------------------------------


def _build(model: type[M], common: dict[str, object], **fields: object) -> M:
    """One native body from fields that each passed the OpenAI body's validation; what only
    the combination can violate (a transcript missing for a clone) is the caller's error."""
    try:
        return model.model_validate({**common, **fields})
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"{first['msg']}", field=field) from exc


def _speaker(gw: Gateway, voice: str | None) -> str | None:
    """The built-in speaker ``voice`` names, directly or through an OpenAI alias."""
    if voice is None:
        return None
    key = voice.casefold()
    builtin = next((s for s in BUILTIN_SPEAKERS if s.casefold() == key), None)
    if builtin is not None:
        return builtin
    return gw.settings.api.voice_aliases.get(key)


def _task(body: SpeechCreateBody, *, speaker: str | None) -> TaskType:
    if body.task_type is not None:
        return body.task_type
    named = task_in_model_name(body.model)
    if named is not None:
        return named
    if body.ref_audio is not None:
        return TaskType.BASE
    if speaker is not None:
        return TaskType.CUSTOM_VOICE
    if body.voice is None:
        return TaskType.VOICE_DESIGN if body.instructions else TaskType.CUSTOM_VOICE
    return TaskType.BASE


def _unknown_voice(gw: Gateway, voice: str | None) -> InvalidRequest:
    if voice is None:
        return InvalidRequest("voice is required", field="voice")
    return InvalidRequest(
        f"unknown voice {voice!r}: use a built-in speaker, an OpenAI voice name, or the id or "
        "name of a registered voice",
        field="voice",
        details={
            "speakers": list(BUILTIN_SPEAKERS),
            "aliases": sorted(gw.settings.api.voice_aliases),
        },
    )
