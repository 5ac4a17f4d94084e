"""Calling the REST API in tests: every response checked against the OpenAPI contract."""

from __future__ import annotations

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.support.contracts import validate_response

GOOD = {"text": "Hello there.", "speaker": "Vivian", "language": "english"}


def checked(method: str, path: str, response: TestResponse) -> TestResponse:
    """Every response the tests see must match the OpenAPI contract."""
    validate_response(method, path, response.status_code, response.get_json(silent=True))
    return response


def submit(client: FlaskClient, headers: dict[str, str], body: object = GOOD) -> TestResponse:
    response = client.post("/v1/tts/jobs", json=body, headers=headers)
    return checked("POST", "/v1/tts/jobs", response)
