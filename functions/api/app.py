"""Routes of the REST API. Each parses, calls one core function, and shapes the response."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, jsonify, redirect, request
from pydantic import ValidationError

from functions.api import errors as api_errors
from shared import service
from shared.auth import Principal, authenticate
from shared.errors import InvalidRequest, PayloadTooLarge
from shared.service import Gateway
from shared.synthesis import SynthesisRequest
from shared.views import JobView

PUBLIC_ENDPOINTS = frozenset({"healthz"})
BODY_TOO_LARGE = "tts.body_too_large"
"""Set in the WSGI environ by the entry point when the body exceeded the limit unread."""


def create_api(gw: Gateway) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = gw.settings.api.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    api_errors.register(app)

    @app.before_request
    def require_key() -> None:
        if request.endpoint in PUBLIC_ENDPOINTS:
            return
        g.principal = authenticate(request.headers.get("Authorization"), keys=gw.keys)
        if request.environ.get(BODY_TOO_LARGE):
            limit = gw.settings.api.max_body_bytes
            raise PayloadTooLarge(f"the body exceeds {limit} bytes", details={"max_bytes": limit})

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.post("/v1/tts/jobs")
    def submit() -> tuple[Response, int, dict[str, str]]:
        body = _parse(SynthesisRequest)
        job = service.submit_job(
            gw,
            principal=_principal(),
            request=body,
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
        view = JobView.of(job)
        return _json(view), 202, {"Location": view.status_url}

    @app.get("/v1/jobs/<job_id>")
    def get_job(job_id: str) -> Response:
        job = service.get_job(gw, principal=_principal(), job_id=job_id)
        return _json(JobView.of(job))

    @app.get("/v1/jobs/<job_id>/audio")
    def get_audio(job_id: str) -> Any:
        url = service.audio_url(gw, principal=_principal(), job_id=job_id)
        response = redirect(url, code=302)
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


def _principal() -> Principal:
    principal: Principal = g.principal
    return principal


def _json(model: JobView) -> Response:
    return Response(model.model_dump_json(), mimetype="application/json")


def _parse(model: type[SynthesisRequest]) -> SynthesisRequest:
    if not request.is_json:
        raise api_errors.UnsupportedMediaType("send the body as application/json")
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise api_errors.MalformedBody("the body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise _invalid(exc) from exc


def _invalid(exc: ValidationError) -> InvalidRequest:
    problems = [
        {"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]}
        for err in exc.errors(include_url=False)
    ]
    first = problems[0]
    return InvalidRequest(
        f"{first['field']}: {first['message']}",
        field=first["field"],
        details={"problems": problems},
    )
