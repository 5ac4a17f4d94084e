"""functions-framework entry points (``--source functions/main.py --target api``).

Each target builds its process's dependencies on first use, not at import, so importing this
module reads no environment and opens no connection.
"""

from __future__ import annotations

import io
from functools import cache

import flask
import functions_framework
from werkzeug.exceptions import RequestEntityTooLarge

from functions.api.app import BODY_TOO_LARGE, create_api
from functions.bootstrap import bootstrap
from shared.adapters import tracing


@cache
def _api_app() -> flask.Flask:
    return create_api(bootstrap())


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    """HTTPS ingress: the whole REST API behind one function."""
    app = _api_app()
    environ = dict(request.environ)
    # functions-framework re-reads the body after we answer, so read it here, once, through the
    # framework's request (which caches it) under our size limit, and hand the bytes inward.
    request.max_content_length = app.config["MAX_CONTENT_LENGTH"]
    try:
        body = request.get_data()
    except RequestEntityTooLarge:
        request.max_content_length = None  # let the framework drain it; the platform caps it
        body = b""
        environ[BODY_TOO_LARGE] = True
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    # A job's trace starts here (or joins the caller's traceparent) and follows the job
    # through Pub/Sub to the worker (shared/adapters/tracing.py).
    with (
        app.request_context(environ),
        tracing.span(
            f"{request.method} api",
            kind=tracing.SpanKind.SERVER,
            parent=tracing.extract(dict(request.headers)),
            attributes={"http.request.method": request.method, "url.path": request.path},
        ) as span,
    ):
        response = app.full_dispatch_request()
        rule = flask.request.url_rule
        span.update_name(f"{request.method} {rule.rule if rule else 'unmatched'}")
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 500:
            tracing.failed(span, f"HTTP {response.status_code}")
        return response
