"""Property-based contract testing: schemathesis generates requests from the OpenAPI document
and checks every answer of the real app (over fakes, a scripted worker finishing jobs) against
it: no server errors, only documented statuses, content types and headers, bodies that match
their schemas, and valid requests accepted.

Bounded: a few examples per operation, derandomized, so the run is quick and repeatable.
"""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from functions.api.app import create_api
from shared.settings import IntakeSettings, Settings, WebhookSettings
from tests.support.contracts import openapi
from tests.support.gateway import fake_gateway, issue_key, make_fakes
from tests.support.worker import ScriptedWorker

ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
# What no schema can say, refused with a documented status after validation passed:
# whether uploaded bytes are audio (or a zip), whether a page token is one this API issued,
# whether a voice name names a voice (OpenAI answers 400 for an unknown voice), and limits that
# are deployment settings (text length, cast size) rather than constants of the document.
SEMANTIC_REFUSALS = [
    ("^/v1/voices$|^/v1/jobs$", "422"),
    (
        "^(/v1/tts/jobs|/v1/audio/normalize|/api/v1/audio/normalize|/api/v1/tts/clone"
        "|/api/v1/tts/clone-prompt|/api/v1/voices/clone-prompt|/v1/voices/import"
        "|/v1/voices/cast|/api/v1/tts/synthesize|/api/v1/tts/design|/v1/tts/batch)$",
        "422",
    ),
    ("^(/v1/audio/speech|/dev/captioned_speech)$", "400"),
]
CONFIG = SchemathesisConfig.from_dict(
    {
        # Invalid requests are still sent, and their answers still checked (no 5xx, documented
        # statuses and bodies). Not checked: that every schema-violating request is refused,
        # since unknown query parameters are ignored, as most HTTP APIs do.
        "checks": {"negative_data_rejection": {"enabled": False}},
        "operations": [
            {
                "include-path-regex": pattern,
                "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, extra]}},
            }
            for pattern, extra in SEMANTIC_REFUSALS
        ],
    }
)
schema = schemathesis.openapi.from_dict(openapi(), config=CONFIG)


@schemathesis.serializer(
    "audio/wav", "audio/flac", "audio/ogg", "audio/mpeg", "application/octet-stream",
    "application/zip",
)  # fmt: skip
def _raw_bytes(ctx: object, value: object) -> bytes:
    """Binary bodies and parts as they are; a generated value of another type (a negative
    example: ``False`` for an upload) goes as its text, for the app to refuse."""
    if isinstance(value, bytes):
        return value
    return value.encode() if isinstance(value, str) else str(value).encode()


def _app_and_key() -> tuple[object, dict[str, str]]:
    fakes = make_fakes()
    # Configured as a deployment is: a missing signing key is a 503 by design, not under test.
    settings = Settings(
        bucket="test-bucket",
        webhooks=WebhookSettings(signing_key="k" * 32),
        intake=IntakeSettings(signing_key="i" * 32),
    )
    gateway = fake_gateway(settings, fakes)
    ScriptedWorker(fakes)
    return create_api(gateway), issue_key(gateway, "alice")


APP, KEY = _app_and_key()
schema.app = APP


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_app_keeps_the_contract(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=KEY, additional_checks=[no_html])


def no_html(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """No answer is a web page: every error (a 404 or 405 of any route, relay included, and a
    redirect) is JSON a client can read, whatever the contract allows for the status."""
    content_type = response.headers.get("content-type", [""])[0]
    assert "html" not in content_type.lower(), (
        f"{case.method} {case.formatted_path} answered {response.status_code} as {content_type}"
    )


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def _strays() -> list[tuple[str, str]]:
    """What no schema generates: every documented path with each method it lacks, an unknown
    child, a trailing slash and doubled slashes, under every prefix (the relay's included)."""
    strays: list[tuple[str, str]] = [("GET", "/"), ("POST", "/api/v1/nope"), ("GET", "/v2/x")]
    for template, item in openapi()["paths"].items():
        path = re.sub(r"\{[^}]+\}", "x1", template)
        allowed = {m.upper() for m in item} | ({"HEAD"} if "get" in item else set())
        strays += [(m, path) for m in METHODS if m not in allowed]
        strays += [("GET", f"{path}/nope"), ("GET", f"{path}/")]
        if path.count("/") > 1:  # doubled inside: a leading "//" would read as a host
            strays.append(("GET", path[0] + path[1:].replace("/", "//")))
    return strays


@pytest.mark.parametrize(("method", "path"), _strays())
def test_no_route_answers_a_stray_request_with_html(method: str, path: str) -> None:
    client = APP.test_client()  # type: ignore[attr-defined]
    response = client.open(path, method=method, headers=KEY)
    assert response.status_code in {404, 405}
    assert response.mimetype == "application/json"
    if method != "HEAD":
        assert response.get_json()["error"]["code"] in {"not_found", "method_not_allowed"}
