"""Routes of the REST API. Each parses, calls one core function, and shapes the response."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import Flask, Response, g, jsonify, redirect, request
from pydantic import BaseModel, TypeAdapter, ValidationError

from functions.api import errors as api_errors
from shared.domain.errors import InvalidRequest, PayloadTooLarge
from shared.domain.jobs import Job
from shared.domain.keys import Principal
from shared.domain.modes import SPEECH_MODES
from shared.usecases import casting, jobs, library
from shared.usecases.auth import authenticate
from shared.usecases.debug import debug_view
from shared.usecases.gateway import Gateway
from shared.wire.bodies import CastBody, CreateVoiceBody, NormalizeBody, SpeechBody, VoicePatch
from shared.wire.views import JobView, VoiceListView, VoiceView

T = TypeVar("T")

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
        job = jobs.submit_job(
            gw,
            principal=_principal(),
            request=_parse(_SPEECH),
            idempotency_key=_idempotency_key(),
        )
        return _accepted(job)

    @app.get("/v1/jobs/<job_id>")
    def get_job(job_id: str) -> Response:
        job = jobs.get_job(gw, principal=_principal(), job_id=job_id)
        return _json(JobView.of(job))

    @app.get("/v1/jobs/<job_id>/audio")
    def get_audio(job_id: str) -> Any:
        url = jobs.audio_url(gw, principal=_principal(), job_id=job_id)
        response = redirect(url, code=302)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/v1/voices")
    def list_voices() -> Response:
        args = request.args
        page = library.list_voices(
            gw,
            principal=_principal(),
            where=library.VoiceFilter(
                character=args.get("character"),
                emotion=args.get("emotion"),
                tag=args.get("tag"),
                query=args.get("q"),
                include_builtin=args.get("builtin", "true").lower() != "false",
            ),
            page_size=_int_arg("page_size", default=50),
            page_token=args.get("page_token"),
        )
        views = [VoiceView.builtin(b.name) for b in page.builtins]
        views += [VoiceView.of(v) for v in page.voices]
        return _json(VoiceListView(voices=tuple(views), next_page_token=page.next_page_token))

    @app.post("/v1/voices")
    def create_voice() -> tuple[Response, int, dict[str, str]]:
        audio = None
        if request.mimetype == "multipart/form-data":
            body = _validated(_CREATE_VOICE, _form_fields())
            upload = request.files.get("ref_audio")
            audio = upload.read() if upload is not None else None
        else:
            body = _parse(_CREATE_VOICE)
        job = jobs.create_voice(
            gw,
            principal=_principal(),
            body=body,
            audio=audio,
            idempotency_key=_idempotency_key(),
        )
        return _accepted(job)

    @app.post("/v1/voices/import")
    def import_voice() -> tuple[Response, int, dict[str, str]]:
        upload = request.files.get("package")
        package = upload.read() if upload is not None else request.get_data()
        voice_id = library.import_voice(gw, principal=_principal(), package=package)
        location = f"/v1/voices/{voice_id}"
        body = {"voice_id": voice_id, "voice_url": location, "state": "pending"}
        return jsonify(body), 202, {"Location": location}

    @app.post("/v1/voices/cast")
    def cast() -> tuple[Response, int, dict[str, str]]:
        job = casting.cast_voices(
            gw,
            principal=_principal(),
            body=_parse(_CAST),
            idempotency_key=_idempotency_key(),
        )
        return _accepted(job)

    @app.get("/v1/voices/<voice_id>")
    def get_voice(voice_id: str) -> Response:
        builtin = library.builtin_speaker(voice_id)
        if builtin is not None:
            return _json(VoiceView.builtin(builtin.name))
        return _json(VoiceView.of(library.get_voice(gw, principal=_principal(), voice_id=voice_id)))

    @app.patch("/v1/voices/<voice_id>")
    def patch_voice(voice_id: str) -> Response:
        voice = library.update_voice(
            gw, principal=_principal(), voice_id=voice_id, patch=_parse(_PATCH)
        )
        return _json(VoiceView.of(voice))

    @app.delete("/v1/voices/<voice_id>")
    def delete_voice(voice_id: str) -> Response:
        library.delete_voice(gw, principal=_principal(), voice_id=voice_id)
        return Response(status=204)

    @app.get("/v1/voices/<voice_id>/package")
    def package_voice(voice_id: str) -> Response:
        name, data = library.package_voice(gw, principal=_principal(), voice_id=voice_id)
        response = Response(data, mimetype="application/zip")
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    @app.get("/v1/debug")
    def debug() -> Response:
        return _json(debug_view(gw, principal=_principal()))

    @app.post("/v1/audio/normalize")
    def normalize() -> tuple[Response, int, dict[str, str]]:
        job = jobs.normalize_audio(
            gw,
            principal=_principal(),
            body=_parse(_NORMALIZE),
            idempotency_key=_idempotency_key(),
        )
        return _accepted(job)

    return app


def _principal() -> Principal:
    principal: Principal = g.principal
    return principal


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), mimetype="application/json")


def _accepted(job: Job) -> tuple[Response, int, dict[str, str]]:
    view = JobView.of(job)
    return _json(view), 202, {"Location": view.status_url}


def _idempotency_key() -> str | None:
    return request.headers.get("Idempotency-Key")


def _int_arg(name: str, *, default: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer", field=name) from None


def _form_fields() -> dict[str, object]:
    """Multipart fields as the JSON body would carry them (tags repeated or comma-separated)."""
    form = request.form
    fields: dict[str, object] = {k: v for k, v in form.items() if k != "tags"}
    if "x_vector_only" in fields:
        fields["x_vector_only"] = str(fields["x_vector_only"]).lower() in {"1", "true", "yes"}
    tags = [t.strip() for raw in form.getlist("tags") for t in raw.split(",") if t.strip()]
    if tags:
        fields["tags"] = tags
    return fields


def _parse(adapter: TypeAdapter[T]) -> T:
    if not request.is_json:
        raise api_errors.UnsupportedMediaType("send the body as application/json")
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise api_errors.MalformedBody("the body must be a JSON object")
    return _validated(adapter, payload)


def _validated(adapter: TypeAdapter[T], payload: dict[str, object]) -> T:
    try:
        return adapter.validate_python(payload)
    except ValidationError as exc:
        raise _invalid(exc) from exc


def _invalid(exc: ValidationError) -> InvalidRequest:
    problems = [
        {"field": _field_name(err["loc"]), "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    first = problems[0]
    return InvalidRequest(
        f"{first['field']}: {first['message']}",
        field=first["field"],
        details={"problems": problems},
    )


def _field_name(loc: tuple[int | str, ...]) -> str:
    # Drop the union tag pydantic puts first ("voice_clone.ref_text" -> "ref_text").
    parts = [str(p) for p in loc]
    if parts and parts[0] in _MODE_TAGS:
        parts = parts[1:]
    return ".".join(parts) or "body"


_MODE_TAGS = frozenset(SPEECH_MODES)
_SPEECH: TypeAdapter[SpeechBody] = TypeAdapter(SpeechBody)
_CREATE_VOICE = TypeAdapter(CreateVoiceBody)
_PATCH = TypeAdapter(VoicePatch)
_CAST = TypeAdapter(CastBody)
_NORMALIZE = TypeAdapter(NormalizeBody)
