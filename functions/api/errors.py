"""Every error the API returns is mapped here, and only here."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from shared.domain import errors

log = logging.getLogger(__name__)


class MalformedBody(errors.InvalidRequest):
    """The body is not the JSON object the route expects."""

    code = "malformed_body"


class UnsupportedMediaType(errors.InvalidRequest):
    code = "unsupported_media_type"


class BadResumePoint(errors.InvalidRequest):
    """A stream's ``Last-Event-ID`` or ``offset`` that is not the index of a piece: a malformed
    request, like a malformed body, since the client only ever had it from us."""

    code = "invalid_resume_point"


class BadCaptionFormat(errors.InvalidRequest):
    """A ``format`` query parameter that names no caption format: a malformed request, as a
    bad resume point is (the values are fixed by the contract, not by the job)."""

    code = "invalid_caption_format"


# Most specific first: the first matching class decides the status.
STATUS: tuple[tuple[type[errors.GatewayError], int], ...] = (
    (MalformedBody, 400),
    (BadResumePoint, 400),
    (BadCaptionFormat, 400),
    (UnsupportedMediaType, 415),
    (errors.PayloadTooLarge, 413),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.InvalidRequest, 422),
    (errors.JobFailed, 502),
    (errors.StillRunning, 504),
    (errors.TransientError, 503),
    (errors.ConfigurationError, 503),
    (errors.PermanentError, 400),
)


def status_of(exc: errors.GatewayError) -> int:
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 500)


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    error: dict[str, object] = {"code": code, "message": message}
    error.update({k: v for k, v in extra.items() if v is not None})
    return {"error": error}


OPENAI_TYPES: dict[int, str] = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable_error",
}
"""OpenAI's ``error.type`` per status; every other 4xx is an ``invalid_request_error``."""

Envelope = Callable[[int, str, str, "errors.GatewayError | None"], dict[str, object]]
"""Builds an error body from (status, code, message, the error if it is ours)."""


def native_envelope(
    status: int, code: str, message: str, exc: errors.GatewayError | None
) -> dict[str, object]:
    if exc is None:
        return error_body(code, message)
    return error_body(code, message, field=exc.field, **exc.details)


def openai_envelope(
    status: int, code: str, message: str, exc: errors.GatewayError | None
) -> dict[str, object]:
    """OpenAI's shape, so its SDKs raise their typed exceptions with our message."""
    kind = OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    param = exc.field if exc is not None else None
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_status(exc: errors.GatewayError) -> int:
    """OpenAI answers 400 for every invalid parameter, including a voice it does not know."""
    status = status_of(exc)
    if status == 422 or (status == 404 and exc.field is not None):
        return 400
    return status


def register(
    target: Flask | Blueprint,
    *,
    envelope: Envelope = native_envelope,
    status: Callable[[errors.GatewayError], int] = status_of,
) -> None:
    """Map every error raised under ``target`` (the app, or one blueprint) to a response."""

    @target.errorhandler(errors.GatewayError)
    def gateway_error(exc: errors.GatewayError) -> tuple[Response, int, dict[str, str]]:
        code = status(exc)
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else {}
        if code == 503:
            headers["Retry-After"] = "30"
            log.warning("unavailable: %s", exc.message)
        job_id = exc.details.get("job_id")
        if isinstance(job_id, str):
            headers["X-Job-Id"] = job_id
        if isinstance(exc, errors.StillRunning):
            # Its job runs on; the same call again would start a second one. OpenAI's SDKs
            # retry a 5xx unless this says not to.
            headers["X-Should-Retry"] = "false"
        return jsonify(envelope(code, exc.code, exc.message, exc)), code, headers

    @target.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int, dict[str, str]]:
        code = exc.code or 500
        name = {413: "payload_too_large", 404: "not_found", 405: "method_not_allowed"}.get(
            code, "http_error"
        )
        # Keep what the exception says about itself, such as the Allow header of a 405.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return jsonify(envelope(code, name, exc.description or exc.name, None)), code, headers

    @target.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        # The outermost boundary: log with the traceback, tell the caller nothing internal.
        log.exception("unhandled error")
        return jsonify(envelope(500, "internal", "internal error", None)), 500
