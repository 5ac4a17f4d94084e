"""The previous relay's routes, as a thin deprecated layer over today's core.

Its clients called one route and got ``audio/wav`` back with ``X-Duration-Seconds``; each route
here submits an ordinary job, waits for it within the deployment's bound (202 with the job past
it, as every synchronous route does), and answers the way the relay did. New clients should use
``/v1/audio/speech`` or ``/v1/tts/jobs``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request
from pydantic import TypeAdapter

from functions.api import streams
from functions.api.parsing import idempotency_key, parse, principal
from shared.domain.audio_formats import AudioFormat
from shared.domain.jobs import Job
from shared.domain.synthesis import CustomVoiceRequest, VoiceDesignRequest
from shared.usecases import delivery, jobs, library
from shared.usecases.gateway import Gateway
from shared.wire.bodies import (
    ClonePromptBody,
    CreateVoiceBody,
    NormalizeBody,
    SpeechBody,
    VoiceCloneBody,
)
from shared.wire.relay import (
    RelayClone,
    RelayClonePromptSpeech,
    RelayCreatePrompt,
    RelayDesign,
    RelayNormalize,
    RelayPrompt,
    RelayPromptCreated,
    RelayPromptList,
    RelaySynthesize,
    RelayVoiceList,
)

DEPRECATION = {"Deprecation": "true", "Link": '</v1/audio/speech>; rel="successor-version"'}

_SYNTHESIZE = TypeAdapter(RelaySynthesize)
_CLONE = TypeAdapter(RelayClone)
_DESIGN = TypeAdapter(RelayDesign)
_PROMPT_SPEECH = TypeAdapter(RelayClonePromptSpeech)
_CREATE_PROMPT = TypeAdapter(RelayCreatePrompt)
_NORMALIZE = TypeAdapter(RelayNormalize)


def relay_routes(gw: Gateway) -> Blueprint:
    bp = Blueprint("relay", __name__)

    def finish(job: Job) -> Any:
        job = delivery.wait_for(gw, job, timeout_s=gw.settings.api.max_wait_s)
        if not job.state.terminal:
            return streams.accepted(job)
        response = streams.whole_audio(gw, job)
        assert job.result is not None
        response.headers["X-Duration-Seconds"] = f"{job.result.duration_s:g}"
        response.headers.update(DEPRECATION)
        return response

    def speak(body: SpeechBody) -> Any:
        job = jobs.submit_job(
            gw, principal=principal(), request=body, idempotency_key=idempotency_key()
        )
        return finish(job)

    @bp.post("/api/v1/tts/synthesize")
    def synthesize() -> Any:
        body = parse(_SYNTHESIZE)
        return speak(CustomVoiceRequest(**body.model_dump()))

    @bp.post("/api/v1/tts/clone")
    def clone() -> Any:
        body = parse(_CLONE)
        fields = body.model_dump(exclude={"x_vector_only_mode"})
        return speak(VoiceCloneBody(**fields, x_vector_only=body.x_vector_only_mode))

    @bp.post("/api/v1/tts/design")
    def design() -> Any:
        return speak(VoiceDesignRequest(**parse(_DESIGN).model_dump()))

    @bp.post("/api/v1/tts/clone-prompt")
    def clone_prompt() -> Any:
        body = parse(_PROMPT_SPEECH)
        fields = body.model_dump(exclude={"prompt"})
        return speak(ClonePromptBody(**fields, voice=body.prompt))

    @bp.post("/api/v1/voices/clone-prompt")
    def create_prompt() -> Any:
        body = parse(_CREATE_PROMPT)
        fields = body.model_dump(exclude={"audio", "x_vector_only_mode"})
        job = jobs.create_voice(
            gw,
            principal=principal(),
            body=CreateVoiceBody(**fields, x_vector_only=body.x_vector_only_mode),
            audio=body.audio,
            idempotency_key=idempotency_key(),
        )
        job = delivery.wait_for(gw, job, timeout_s=gw.settings.api.max_wait_s)
        if not job.state.terminal:
            return streams.accepted(job)
        delivery.require_success(job)
        assert job.voice_id is not None
        created = RelayPromptCreated(prompt_id=job.voice_id, name=body.name)
        return _json(created)

    @bp.get("/api/v1/voices/prompts")
    def list_prompts() -> Response:
        return _json(RelayPromptList(prompts=_prompts(gw, query=None)))

    @bp.get("/api/v1/voices/prompts/search")
    def search_prompts() -> Response:
        query = request.args.get("q") or None
        return _json(RelayPromptList(prompts=_prompts(gw, query=query)))

    @bp.delete("/api/v1/voices/prompts/<name:name>")
    def delete_prompt(name: str) -> Response:
        voice = jobs.find_voice(gw, principal=principal(), ref=name)
        library.delete_voice(gw, principal=principal(), voice_id=voice.id)
        return _json(RelayPromptCreated(prompt_id=voice.id, name=voice.name, status="deleted"))

    @bp.get("/api/v1/tts/voices")
    def list_tts_voices() -> Response:
        page = _library_page(gw, query=None, include_builtin=True)
        speakers = tuple(b.name for b in page.builtins)
        prompts = tuple(RelayPrompt.of(v) for v in page.voices)
        return _json(RelayVoiceList(speakers=speakers, prompts=prompts))

    @bp.post("/api/v1/audio/normalize")
    def normalize() -> Any:
        body = parse(_NORMALIZE)
        job = jobs.normalize_audio(
            gw,
            principal=principal(),
            body=NormalizeBody(**body.model_dump(exclude={"format"}), format=AudioFormat.WAV),
            idempotency_key=idempotency_key(),
        )
        return finish(job)

    return bp


def _json(model: Any) -> Response:
    response = Response(model.model_dump_json(), mimetype="application/json")
    response.headers.update(DEPRECATION)
    return response


def _library_page(gw: Gateway, *, query: str | None, include_builtin: bool) -> library.VoicePage:
    return library.list_voices(
        gw,
        principal=principal(),
        where=library.VoiceFilter(query=query, include_builtin=include_builtin),
        page_size=library.MAX_PAGE_SIZE,
    )


def _prompts(gw: Gateway, *, query: str | None) -> tuple[RelayPrompt, ...]:
    page = _library_page(gw, query=query, include_builtin=False)
    return tuple(RelayPrompt.of(v) for v in page.voices)
