"""functions-framework entry points (``--source functions/main.py --target api``).

Each target builds its process's dependencies on first use, not at import, so importing this
module reads no environment and opens no connection.
"""

from __future__ import annotations

from functools import cache

import flask
import functions_framework

from functions.api.app import create_api
from functions.bootstrap import bootstrap


@cache
def _api_app() -> flask.Flask:
    return create_api(bootstrap())


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    """HTTPS ingress: the whole REST API behind one function."""
    app = _api_app()
    with app.request_context(request.environ):
        return app.full_dispatch_request()
