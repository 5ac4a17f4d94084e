"""OpenAI-compatible routes: ``POST /v1/audio/speech`` and ``GET /v1/models``.

Every call is an ordinary job (it can be looked up afterwards by the ``X-Job-Id`` it answers
with). Errors here use OpenAI's envelope so its SDKs raise their typed exceptions.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response
from pydantic import TypeAdapter

from functions.api import errors as api_errors
from functions.api import streams
from functions.api.parsing import idempotency_key, parse, principal
from shared.usecases import delivery, speech
from shared.usecases.gateway import Gateway
from shared.wire.openai import SpeechCreateBody

_SPEECH = TypeAdapter(SpeechCreateBody)


def openai_routes(gw: Gateway) -> Blueprint:
    bp = Blueprint("openai", __name__)
    api_errors.register(bp, envelope=api_errors.openai_envelope, status=api_errors.openai_status)

    @bp.post("/v1/audio/speech")
    def create_speech() -> Any:
        body = parse(_SPEECH)
        job = speech.submit_speech(
            gw, principal=principal(), body=body, idempotency_key=idempotency_key()
        )
        if body.stream_format is not None:
            return streams.stream(gw, job, kind=body.stream_format)
        job = delivery.wait_for(gw, job, timeout_s=gw.settings.api.max_wait_s)
        if not job.state.terminal:
            return streams.accepted(job)
        return streams.whole_audio(gw, job)

    @bp.get("/v1/models")
    def list_models() -> Response:
        return Response(speech.list_models(gw).model_dump_json(), mimetype="application/json")

    return bp
