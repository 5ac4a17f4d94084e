"""Reading a request: the caller, its headers and its body, validated into typed models.

Validation errors become one ``InvalidRequest`` naming the first bad field; the error map of
each route decides how it is shown.
"""

from __future__ import annotations

import json
from typing import TypeVar

from flask import g, request
from pydantic import TypeAdapter, ValidationError

from functions.api import errors as api_errors
from shared.domain.errors import InvalidRequest
from shared.domain.keys import Principal
from shared.domain.modes import SPEECH_MODES
from shared.wire import json_text
from shared.wire.bodies import OPTION_FIELDS, JobOptions

T = TypeVar("T")
_OPTIONS = TypeAdapter(JobOptions)


def principal() -> Principal:
    principal: Principal = g.principal
    return principal


def idempotency_key() -> str | None:
    return request.headers.get("Idempotency-Key")


def int_arg(name: str, *, default: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer", field=name) from None


def form_fields() -> dict[str, object]:
    """Multipart fields as the JSON body would carry them (tags repeated or comma-separated)."""
    form = request.form
    fields: dict[str, object] = {k: v for k, v in form.items() if k != "tags"}
    if "x_vector_only" in fields:
        fields["x_vector_only"] = str(fields["x_vector_only"]).lower() in {"1", "true", "yes"}
    tags = [t.strip() for raw in form.getlist("tags") for t in raw.split(",") if t.strip()]
    if tags:
        fields["tags"] = tags
    return fields


def parse(adapter: TypeAdapter[T]) -> T:
    _json_object()  # a body that is no JSON object is malformed (400), not invalid (422)
    # Strict: JSON types as the contract states them (no "1" for 1, no 0 for false).
    try:
        return adapter.validate_json(request.get_data(), strict=True)
    except ValidationError as exc:
        raise _invalid(exc) from exc


def parse_with_options(adapter: TypeAdapter[T]) -> tuple[T, JobOptions]:
    """A body that carries a request and, beside it, how its job is delivered (deadline,
    correlation, reply topic); ``Cancel-After`` (seconds, or ``30s`` / ``5m`` / ``2h``) sets the
    deadline as the header Replicate's clients send."""
    payload = _json_object()
    options = {k: payload.pop(k) for k in OPTION_FIELDS & payload.keys()}
    header = request.headers.get("Cancel-After")
    if header is not None and "deadline_s" not in options:
        options["deadline_s"] = _seconds(header)
    try:
        parsed = adapter.validate_json(json.dumps(payload), strict=True)
        return parsed, _OPTIONS.validate_json(json.dumps(options), strict=True)
    except ValidationError as exc:
        raise _invalid(exc) from exc


def _json_object() -> dict[str, object]:
    """The body as a JSON object. Read with a bounded depth, not Flask's ``get_json``: the
    standard decoder raises ``RecursionError`` on deep nesting, which no handler expects."""
    if not request.is_json:
        raise api_errors.UnsupportedMediaType("send the body as application/json")
    try:
        payload = json_text.loads(request.get_data())
    except json_text.TooDeep as exc:
        raise api_errors.MalformedBody(
            f"the body nests deeper than {json_text.MAX_DEPTH} levels"
        ) from exc
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise api_errors.MalformedBody("the body must be a JSON object")
    return payload


def _seconds(value: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    text = value.strip().lower()
    scale = units.get(text[-1:], 0)
    try:
        return float(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        raise InvalidRequest(
            "Cancel-After takes seconds, or a number with s, m or h", field="Cancel-After"
        ) from None


def validated(adapter: TypeAdapter[T], payload: dict[str, object]) -> T:
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
