"""Routes of the REST API. Each parses, calls one core function, and shapes the response."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, jsonify, redirect, request
from pydantic import BaseModel, TypeAdapter
from werkzeug.routing import BaseConverter

from functions.api import errors as api_errors
from functions.api import streams
from functions.api.openai import openai_routes
from functions.api.parsing import (
    form_fields,
    idempotency_key,
    int_arg,
    parse,
    parse_with_options,
    principal,
    validated,
)
from functions.api.relay import relay_routes
from shared.domain.captions import CaptionFormat
from shared.domain.errors import InvalidRequest, PayloadTooLarge
from shared.domain.jobs import Job, JobState, Progress
from shared.usecases import (
    batch,
    captions,
    casting,
    delivery,
    intake,
    jobs,
    library,
    parents,
    webhooks,
)
from shared.usecases.auth import authenticate
from shared.usecases.debug import debug_view
from shared.usecases.gateway import Gateway
from shared.wire.bodies import (
    BatchBody,
    CastBody,
    CreateVoiceBody,
    NormalizeBody,
    SpeechBody,
    VoicePatch,
)
from shared.wire.openai import StreamFormat
from shared.wire.views import (
    ErrorView,
    JobListView,
    JobView,
    ManifestItemView,
    ManifestView,
    VerifySummaryView,
    VoiceListView,
    VoiceView,
)

PUBLIC_ENDPOINTS = frozenset({"healthz"})
BODY_TOO_LARGE = "tts.body_too_large"
"""Set in the WSGI environ by the entry point when the body exceeded the limit unread."""


class _Api(Flask):
    """Flask without its automatic ``OPTIONS`` answers: every method the contract does not
    list is a 405 naming the ones it does (no CORS preflight is offered)."""

    def add_url_rule(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("provide_automatic_options") is None:  # blueprints pass None
            kwargs["provide_automatic_options"] = False
        super().add_url_rule(*args, **kwargs)


class _Name(BaseConverter):
    """A path segment naming a resource, never one of the fixed words beside it in the route
    table (``/v1/voices/import``, ``/v1/voices/cast``, ``.../prompts/search``): a method those
    fixed routes lack is then a 405 naming theirs, not a lookup of a voice called "import"."""

    regex = r"(?!(?:import|cast|search)$)[^/]+"


def create_api(gw: Gateway) -> Flask:
    app = _Api(__name__)
    # Werkzeug answers ``//v1/jobs`` (and a rule's missing default) with a redirect whose body
    # is an HTML page, raised past every error handler: such a path is simply not found here.
    app.url_map.merge_slashes = False
    app.url_map.redirect_defaults = False
    app.url_map.converters["name"] = _Name
    app.config["MAX_CONTENT_LENGTH"] = gw.settings.api.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    api_errors.register(app)
    app.register_blueprint(openai_routes(gw))
    app.register_blueprint(relay_routes(gw))

    @app.before_request
    def require_key() -> None:
        if request.endpoint in PUBLIC_ENDPOINTS:
            return
        g.principal = authenticate(request.headers.get("Authorization"), keys=gw.keys)
        if request.environ.get(BODY_TOO_LARGE):
            limit = gw.settings.api.max_body_bytes
            raise PayloadTooLarge(f"the body exceeds {limit} bytes", details={"max_bytes": limit})

    def _view(job: Job, *, brief: bool = False) -> JobView:
        return JobView.of(job, progress=parents.progress(gw, job), brief=brief)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.post("/v1/tts/jobs")
    def submit() -> tuple[Response, int, dict[str, str]]:
        body, options = parse_with_options(_SPEECH)
        job = jobs.submit_job(
            gw,
            principal=principal(),
            request=body,
            idempotency_key=idempotency_key(),
            options=options,
        )
        wait_s = _preferred_wait_s(gw.settings.api.max_wait_s)
        if wait_s is None:
            return _accepted(job)
        job = delivery.wait_for(gw, job, timeout_s=wait_s)
        response, status, headers = _accepted(job)
        headers["Preference-Applied"] = f"wait={wait_s:g}"
        return response, 200 if job.state.terminal else status, headers

    @app.get("/v1/webhooks/secret")
    def webhook_secret() -> Response:
        return jsonify(secret=webhooks.owner_secret(gw, principal().owner))

    @app.get("/v1/intake/secret")
    def intake_secret() -> Response:
        caller = principal()
        return jsonify(key_id=caller.key_id, secret=intake.signing_secret(gw, caller))

    @app.post("/v1/tts/batch")
    def submit_batch() -> tuple[Response, int, dict[str, str]]:
        body, options = parse_with_options(_BATCH)
        job = batch.submit_batch(
            gw,
            principal=principal(),
            body=body,
            idempotency_key=idempotency_key(),
            options=options,
        )
        return _accepted(job, progress=parents.progress(gw, job))

    @app.get("/v1/jobs/<job_id>/manifest")
    def get_manifest(job_id: str) -> Response:
        found = batch.manifest(gw, principal=principal(), job_id=job_id)
        view = ManifestView(
            job_id=found.job.id,
            state=found.job.state,
            items=tuple(map(_manifest_item, found.items)),
            joined=_manifest_item(found.joined) if found.joined else None,
        )
        return _json(view)

    @app.post("/v1/jobs/<job_id>/retry")
    def retry_job(job_id: str) -> tuple[Response, int, dict[str, str]]:
        job = batch.retry_job(gw, principal=principal(), job_id=job_id)
        return _accepted(job, progress=parents.progress(gw, job))

    @app.get("/v1/jobs")
    def list_jobs() -> Response:
        page = jobs.list_jobs(
            gw,
            principal=principal(),
            state=_state_arg(),
            created_after=_time_arg("created_after"),
            page_size=int_arg("page_size", default=50),
            page_token=request.args.get("page_token"),
        )
        views = tuple(_view(j, brief=True) for j in page.jobs)
        return _json(JobListView(jobs=views, next_page_token=page.next_page_token))

    @app.post("/v1/jobs/<job_id>/cancel")
    def cancel_job(job_id: str) -> Response:
        return _json(_view(jobs.cancel_job(gw, principal=principal(), job_id=job_id)))

    @app.get("/v1/jobs/<job_id>/stream")
    def stream_job(job_id: str) -> Any:
        kind = _stream_format()
        start = _resume_from(kind)
        job = jobs.get_job(gw, principal=principal(), job_id=job_id)
        return streams.stream(gw, job, kind=kind, start=start)

    @app.get("/v1/jobs/<job_id>")
    def get_job(job_id: str) -> Response:
        return _json(_view(jobs.get_job(gw, principal=principal(), job_id=job_id)))

    @app.get("/v1/jobs/<job_id>/audio")
    def get_audio(job_id: str) -> Any:
        url = jobs.audio_url(gw, principal=principal(), job_id=job_id)
        response = redirect(url, code=302)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/v1/jobs/<job_id>/captions")
    def get_captions(job_id: str) -> Response:
        fmt = _caption_format()
        text = captions.job_captions(gw, principal=principal(), job_id=job_id, fmt=fmt)
        response = Response(text, content_type=fmt.content_type)
        # The job was found, so its id is one of ours: letters and digits, safe in the header.
        name = f"{job_id}{fmt.extension}"
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    @app.get("/v1/voices")
    def list_voices() -> Response:
        args = request.args
        page = library.list_voices(
            gw,
            principal=principal(),
            where=library.VoiceFilter(
                character=args.get("character"),
                emotion=args.get("emotion"),
                tag=args.get("tag"),
                query=args.get("q"),
                include_builtin=args.get("builtin", "true").lower() != "false",
            ),
            page_size=int_arg("page_size", default=50),
            page_token=args.get("page_token"),
        )
        views = [VoiceView.builtin(b.name) for b in page.builtins]
        views += [VoiceView.of(v) for v in page.voices]
        return _json(VoiceListView(voices=tuple(views), next_page_token=page.next_page_token))

    @app.post("/v1/voices")
    def create_voice() -> tuple[Response, int, dict[str, str]]:
        audio = None
        if request.mimetype == "multipart/form-data":
            body = validated(_CREATE_VOICE, form_fields())
            upload = request.files.get("ref_audio")
            audio = upload.read() if upload is not None else None
        else:
            body = parse(_CREATE_VOICE)
        job = jobs.create_voice(
            gw,
            principal=principal(),
            body=body,
            audio=audio,
            idempotency_key=idempotency_key(),
        )
        return _accepted(job)

    @app.post("/v1/voices/import")
    def import_voice() -> tuple[Response, int, dict[str, str]]:
        upload = request.files.get("package")
        package = upload.read() if upload is not None else request.get_data()
        voice_id = library.import_voice(gw, principal=principal(), package=package)
        location = f"/v1/voices/{voice_id}"
        body = {"voice_id": voice_id, "voice_url": location, "state": "pending"}
        return jsonify(body), 202, {"Location": location}

    @app.post("/v1/voices/cast")
    def cast() -> tuple[Response, int, dict[str, str]]:
        job = casting.cast_voices(
            gw,
            principal=principal(),
            body=parse(_CAST),
            idempotency_key=idempotency_key(),
        )
        return _accepted(job, progress=parents.progress(gw, job))

    @app.get("/v1/voices/<name:voice_id>")
    def get_voice(voice_id: str) -> Response:
        builtin = library.builtin_speaker(voice_id)
        if builtin is not None:
            return _json(VoiceView.builtin(builtin.name))
        return _json(VoiceView.of(library.get_voice(gw, principal=principal(), voice_id=voice_id)))

    @app.patch("/v1/voices/<name:voice_id>")
    def patch_voice(voice_id: str) -> Response:
        voice = library.update_voice(
            gw, principal=principal(), voice_id=voice_id, patch=parse(_PATCH)
        )
        return _json(VoiceView.of(voice))

    @app.delete("/v1/voices/<name:voice_id>")
    def delete_voice(voice_id: str) -> Response:
        library.delete_voice(gw, principal=principal(), voice_id=voice_id)
        return Response(status=204)

    @app.get("/v1/voices/<name:voice_id>/package")
    def package_voice(voice_id: str) -> Response:
        name, data = library.package_voice(gw, principal=principal(), voice_id=voice_id)
        response = Response(data, mimetype="application/zip")
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    @app.get("/v1/debug")
    def debug() -> Response:
        return _json(debug_view(gw, principal=principal()))

    @app.post("/v1/audio/normalize")
    def normalize() -> tuple[Response, int, dict[str, str]]:
        job = jobs.normalize_audio(
            gw,
            principal=principal(),
            body=parse(_NORMALIZE),
            idempotency_key=idempotency_key(),
        )
        return _accepted(job)

    return app


def _manifest_item(item: batch.ManifestItem) -> ManifestItemView:
    return ManifestItemView(
        key=item.key,
        job_id=item.job_id,
        state=item.state,
        audio_url=f"/v1/jobs/{item.job_id}/audio" if item.audio else None,
        duration_s=item.audio.duration_s if item.audio else None,
        error=ErrorView(code=item.error.code, message=item.error.message) if item.error else None,
        verification=VerifySummaryView.of(item.audio.verification)
        if item.audio and item.audio.verification
        else None,
    )


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), mimetype="application/json")


def _accepted(
    job: Job, *, progress: Progress | None = None
) -> tuple[Response, int, dict[str, str]]:
    view = JobView.of(job, progress=progress)
    return _json(view), 202, {"Location": view.status_url}


_SPEECH: TypeAdapter[SpeechBody] = TypeAdapter(SpeechBody)
_CREATE_VOICE = TypeAdapter(CreateVoiceBody)
_PATCH = TypeAdapter(VoicePatch)
_CAST = TypeAdapter(CastBody)
_BATCH = TypeAdapter(BatchBody)
_NORMALIZE = TypeAdapter(NormalizeBody)


def _preferred_wait_s(limit: float) -> float | None:
    """RFC 7240 ``Prefer: wait=N``: how long the caller is willing to wait, within ``limit``."""
    for preference in request.headers.get("Prefer", "").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        try:
            seconds = float(value.strip())
        except ValueError:
            raise InvalidRequest(
                "Prefer: wait=N takes a number of seconds", field="Prefer"
            ) from None
        if not 0 <= seconds < float("inf"):
            raise InvalidRequest("Prefer: wait=N takes a number of seconds", field="Prefer")
        return min(seconds, limit)
    return None


def _stream_format() -> StreamFormat:
    raw = request.args.get("stream_format", StreamFormat.AUDIO.value)
    try:
        return StreamFormat(raw)
    except ValueError:
        valid = [s.value for s in StreamFormat]
        raise InvalidRequest(
            f"stream_format must be one of {valid}", field="stream_format"
        ) from None


def _caption_format() -> CaptionFormat:
    raw = request.args.get("format", CaptionFormat.SRT.value)
    try:
        return CaptionFormat(raw)
    except ValueError:
        valid = [f.value for f in CaptionFormat]
        raise api_errors.BadCaptionFormat(
            f"format must be one of {valid}", field="format", details={"valid": valid}
        ) from None


def _resume_from(kind: StreamFormat) -> int:
    """The first piece to send: after SSE's ``Last-Event-ID``, or at ``offset``."""
    last = request.headers.get("Last-Event-ID")
    if kind is StreamFormat.SSE and last is not None:
        return _piece_index(last, field="Last-Event-ID") + 1
    offset = request.args.get("offset")
    return 0 if offset is None else _piece_index(offset, field="offset")


_PIECE_INDEX = re.compile(r"[0-9]{1,9}")
"""Digits only, and few: ``int`` would also take ``-3`` (a piece that can never come), `` 4``
and ``1_0``, and fail on thousands of digits."""


def _piece_index(raw: str, *, field: str) -> int:
    if _PIECE_INDEX.fullmatch(raw) is None:
        raise api_errors.BadResumePoint(
            f"{field} must be the index of a piece (0, 1, 2, ...)", field=field
        )
    return int(raw)


def _state_arg() -> JobState | None:
    raw = request.args.get("state")
    if raw is None:
        return None
    try:
        return JobState(raw)
    except ValueError:
        valid = [s.value for s in JobState]
        raise InvalidRequest(f"state must be one of {valid}", field="state") from None


def _time_arg(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an ISO 8601 time", field=name) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
