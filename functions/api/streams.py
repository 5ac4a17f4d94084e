"""HTTP responses that carry a job's audio: whole, chunked as it is made, or as server-sent
events in OpenAI's shape. Shared by the native routes and the OpenAI-compatible ones."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator, Mapping

from flask import Response

from shared.domain.audio_formats import FORMATS
from shared.domain.errors import FailedJobStream, GatewayError, StillRunning
from shared.domain.jobs import Job
from shared.domain.synthesis import output_format, spoken_text
from shared.usecases import delivery
from shared.usecases.gateway import Gateway
from shared.wire.openai import StreamFormat
from shared.wire.views import JobView

log = logging.getLogger(__name__)

CODEC_FRAMES_PER_S = 12.5
"""Qwen3-TTS's codec: the ``output_tokens`` an SSE ``done`` event reports per second of audio."""


def job_headers(job: Job) -> dict[str, str]:
    headers = {"X-Job-Id": job.id, "Location": JobView.of(job).status_url}
    if job.result is not None:
        headers["X-Duration-S"] = f"{job.result.duration_s:g}"
    return headers


def accepted(job: Job) -> tuple[Response, int, dict[str, str]]:
    """The job, still on its way: the caller looks it up (or streams it) later."""
    view = JobView.of(job)
    body = Response(view.model_dump_json(), mimetype="application/json")
    return body, 202, {"Location": view.status_url, "X-Job-Id": job.id}


def whole_audio(gw: Gateway, job: Job, *, ahead: delivery.AudioAhead | None = None) -> Response:
    """A finished job's audio in one response; ``JobFailed`` when it did not succeed."""
    data = delivery.finished_audio(gw, job, ahead=ahead)
    assert job.result is not None
    return Response(data, mimetype=job.result.content_type, headers=job_headers(job))


def stream(
    gw: Gateway, job: Job, *, kind: StreamFormat, start: int = 0, accept_late: bool = True
) -> Response | tuple[Response, int, dict[str, str]]:
    """Stream the job's pieces from ``start``, once the first one exists.

    Waiting for the first piece happens before any byte is sent, so a job that fails or a wait
    that runs out still gets a proper status (the error, or ``202`` with the job; with
    ``accept_late`` false, ``StillRunning`` is raised for the caller to answer). After that
    the status is sent: an audio stream that breaks ends early, an SSE stream sends an
    ``error`` event, and either can be resumed from the next piece. An SSE stream of a job
    that failed or was canceled is that ``error`` event whenever it is learnt, before the first
    piece too, so an SSE client hears of a failed job one way.
    """
    pieces = delivery.pieces(gw, job, start=start, idle_s=gw.settings.api.max_wait_s)
    headers = {**job_headers(job), "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    try:
        first: delivery.Piece | None = next(pieces)
    except StillRunning:
        if not accept_late:
            raise
        return accepted(job)
    except StopIteration:
        first = None  # every piece was sent before: resuming at the end
    except FailedJobStream as exc:
        if kind is not StreamFormat.SSE:
            raise  # nothing sent yet: the error handler answers it (409)
        return Response(iter([_error(exc)]), mimetype="text/event-stream", headers=headers)
    if kind is StreamFormat.SSE:
        events = _sse(gw, job, first, pieces)
        return Response(events, mimetype="text/event-stream", headers=headers)
    fmt = output_format(job.request)
    mimetype = FORMATS[fmt].content_type if fmt else "application/octet-stream"
    return Response(_audio(job, first, pieces), mimetype=mimetype, headers=headers)


def _audio(
    job: Job, first: delivery.Piece | None, rest: Iterator[delivery.Piece]
) -> Iterator[bytes]:
    if first is not None:
        yield first.data
    try:
        for piece in rest:
            yield piece.data
    except GatewayError as exc:
        # The status went out with the first piece; a short body is all that is left to say.
        log.warning("audio stream ended early", extra={"job_id": job.id, "code": exc.code})


def _sse(
    gw: Gateway, job: Job, first: delivery.Piece | None, rest: Iterator[delivery.Piece]
) -> Iterator[str]:
    try:
        if first is not None:
            yield _delta(first)
        for piece in rest:
            yield _delta(piece)
    except GatewayError as exc:
        yield _error(exc)
        return
    finished = gw.jobs.get(job.id) or job
    duration = finished.result.duration_s if finished.result else 0.0
    text = spoken_text(finished.request)
    frames = round(duration * CODEC_FRAMES_PER_S)
    done = {
        "type": "speech.audio.done",
        # Characters in, codec frames out: the closest this model has to OpenAI's tokens.
        "usage": {
            "input_tokens": len(text),
            "output_tokens": frames,
            "total_tokens": len(text) + frames,
        },
        "job_id": finished.id,
        "duration_s": duration,
    }
    yield _event(done, event_id=None)


def _error(exc: GatewayError) -> str:
    """An SSE ``error`` event, as OpenAI's streams end with one: the code and message an error
    response would carry, and the job's own error (``job_error``) where the job failed."""
    error: dict[str, object] = {"code": exc.code, "message": exc.message}
    for key in ("job_id", "job_error"):
        if key in exc.details:
            error[key] = str(exc.details[key])
    return _event({"type": "error", "error": error}, event_id=None)


def _delta(piece: delivery.Piece) -> str:
    audio = base64.b64encode(piece.data).decode()
    return _event({"type": "speech.audio.delta", "audio": audio}, event_id=str(piece.index))


def _event(payload: Mapping[str, object], *, event_id: str | None) -> str:
    prefix = f"id: {event_id}\n" if event_id is not None else ""
    return f"{prefix}data: {json.dumps(payload)}\n\n"
