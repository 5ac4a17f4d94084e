"""Every error the API returns is mapped here, and only here."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from shared.domain import errors

log = logging.getLogger(__name__)


class MalformedBody(errors.InvalidRequest):
    """The body is not the JSON object the route expects."""

    code = "malformed_body"


class UnsupportedMediaType(errors.InvalidRequest):
    code = "unsupported_media_type"


# Most specific first: the first matching class decides the status.
STATUS: tuple[tuple[type[errors.GatewayError], int], ...] = (
    (MalformedBody, 400),
    (UnsupportedMediaType, 415),
    (errors.PayloadTooLarge, 413),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.InvalidRequest, 422),
    (errors.TransientError, 503),
    (errors.PermanentError, 400),
)


def status_of(exc: errors.GatewayError) -> int:
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 500)


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    error: dict[str, object] = {"code": code, "message": message}
    error.update({k: v for k, v in extra.items() if v is not None})
    return {"error": error}


def register(app: Flask) -> None:
    @app.errorhandler(errors.GatewayError)
    def gateway_error(exc: errors.GatewayError) -> tuple[Response, int, dict[str, str]]:
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        if status == 503:
            headers["Retry-After"] = "30"
            log.warning("unavailable: %s", exc.message)
        body = error_body(exc.code, exc.message, field=exc.field, **exc.details)
        return jsonify(body), status, headers

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code = {413: "payload_too_large", 404: "not_found", 405: "method_not_allowed"}.get(
            status, "http_error"
        )
        return jsonify(error_body(code, exc.description or exc.name)), status

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        # The outermost boundary: log with the traceback, tell the caller nothing internal.
        log.exception("unhandled error")
        return jsonify(error_body("internal", "internal error")), 500
