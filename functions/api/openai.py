"""OpenAI-compatible routes: ``POST /v1/audio/speech`` and ``GET /v1/models``; and
Kokoro-FastAPI's ``POST /dev/captioned_speech``, which takes the same body.

Every call is an ordinary job (it can be looked up afterwards by the ``X-Job-Id`` it answers
with). Errors here use OpenAI's envelope so its SDKs raise their typed exceptions.
"""

from __future__ import annotations

import base64
from typing import Any

from flask import Blueprint, Response
from pydantic import TypeAdapter

from functions.api import errors as api_errors
from functions.api import streams
from functions.api.parsing import idempotency_key, parse, principal
from shared.domain.errors import StillRunning
from shared.domain.jobs import Job
from shared.usecases import captions, delivery, speech
from shared.usecases.gateway import Gateway
from shared.wire.openai import CaptionedSpeech, SpeechCreateBody, StreamFormat, WordTimestamp

_SPEECH = TypeAdapter(SpeechCreateBody)


def openai_routes(gw: Gateway) -> Blueprint:
    bp = Blueprint("openai", __name__)
    api_errors.register(bp, envelope=api_errors.openai_envelope, status=api_errors.openai_status)

    @bp.post("/v1/audio/speech")
    def create_speech() -> Any:
        body = parse(_SPEECH)
        # SSE is a shape of its own: a job that is not streamed sends its whole audio as one
        # event once made. Bytes are sent as they are made only when the job makes pieces.
        wait_s = gw.settings.api.max_wait_s
        if body.stream_format is StreamFormat.SSE or body.streamed:
            job = speech.submit_speech(
                gw, principal=principal(), body=body, idempotency_key=idempotency_key()
            )
            try:
                return streams.stream(
                    gw, job, kind=body.stream_format or StreamFormat.AUDIO, accept_late=False
                )
            except StillRunning:
                raise _still_running(job, waited_s=wait_s) from None
        # The whole audio in this answer: a cache hit's is read while its job is written.
        submitted = speech.submit_speech_for_audio(
            gw, principal=principal(), body=body, idempotency_key=idempotency_key()
        )
        job = delivery.wait_for(gw, submitted.job, timeout_s=wait_s)
        if not job.state.terminal:
            raise _still_running(job, waited_s=wait_s)
        return streams.whole_audio(gw, job, ahead=submitted.audio)

    @bp.post("/dev/captioned_speech")
    def captioned_speech() -> Response:
        # Words are timed only where a job is checked; and the words come with the whole
        # audio in one JSON answer, so the job is made whole (a stream asked for is not).
        asked = parse(_SPEECH)
        body = asked.model_copy(update={"verify": True, "stream": False, "stream_format": None})
        job = speech.submit_speech(
            gw, principal=principal(), body=body, idempotency_key=idempotency_key()
        )
        wait_s = gw.settings.api.max_wait_s
        job = delivery.wait_for(gw, job, timeout_s=wait_s)
        if not job.state.terminal:
            raise _still_running(job, waited_s=wait_s)
        made = captions.captioned_audio(gw, job)
        assert job.result is not None  # captioned_audio refuses a job without audio
        answer = CaptionedSpeech(
            audio=base64.b64encode(made.data).decode(),
            audio_format=job.result.format,
            timestamps=tuple(
                WordTimestamp(word=w.word, start_time=w.start_s, end_time=w.end_s)
                for w in made.words
            ),
        )
        return Response(
            answer.model_dump_json(),
            mimetype="application/json",
            headers=streams.job_headers(job),
        )

    @bp.get("/v1/models")
    def list_models() -> Response:
        return Response(speech.list_models(gw).model_dump_json(), mimetype="application/json")

    return bp


def _still_running(job: Job, *, waited_s: float) -> StillRunning:
    """Past the wait an OpenAI client gets an error, never a 2xx that is not audio (its SDK
    would save a job's JSON as the audio file). The job runs on, and this names it."""
    return StillRunning(
        f"job {job.id} has not finished within {waited_s:g} s; it runs on: fetch its audio "
        f"later from /v1/jobs/{job.id}/audio (or /v1/jobs/{job.id}/stream)",
        details={"job_id": job.id},
    )
