"""Input built to break a parser answers a clean client error, never a 500: a body nested
50,000 levels deep on every JSON route and on RunPod's webhook, and a webhook token that is
not ASCII (``hmac.compare_digest`` raises ``TypeError`` on such a str)."""

from __future__ import annotations

import re
from pathlib import Path

import functions_framework
import pytest
from flask.testing import FlaskClient

from shared.domain.backends import BackendConfig, BackendKind
from shared.domain.errors import Unauthenticated
from shared.settings import RunPodSettings, Settings
from shared.usecases.dispatch import verify_webhook, webhook_token
from shared.usecases.gateway import Gateway
from tests.support.api import checked
from tests.support.contracts import openapi
from tests.support.gateway import Fakes, fake_gateway

DEEP = b"[" * 50_000 + b"]" * 50_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
RUNPOD_SOURCE = Path(__file__).resolve().parents[2] / "functions" / "runpod.py"


def json_routes() -> list[tuple[str, str]]:
    """Every operation of the contract that takes a JSON body, its path parameters filled."""
    routes = []
    for template, item in openapi()["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {}) if isinstance(op, dict) else {}
            if "application/json" in content:
                routes.append((method.upper(), re.sub(r"\{[^}]+\}", "v0000000001", template)))
    return routes


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["array", "object"])
@pytest.mark.parametrize(("method", "path"), json_routes())
def test_a_deeply_nested_body_is_a_400_on_every_json_route(
    client: FlaskClient, alice: dict[str, str], method: str, path: str, body: bytes
) -> None:
    headers = {**alice, "Content-Type": "application/json"}
    response = checked(method, path, client.open(path, method=method, data=body, headers=headers))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "malformed_body"
    assert error["message"] == "the body nests deeper than 64 levels"


def test_nesting_within_the_bound_is_read_as_usual(
    client: FlaskClient, alice: dict[str, str]
) -> None:
    """The bound refuses only depth: a body nested 60 levels is validated like any other."""
    body = b'{"text": "Hi.", "speaker": "Ryan", "correlation": ' + b"[" * 60 + b"]" * 60 + b"}"
    headers = {**alice, "Content-Type": "application/json"}
    response = client.post("/v1/tts/jobs", data=body, headers=headers)
    checked("POST", "/v1/tts/jobs", response)
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == "correlation"


@pytest.fixture
def runpod_gateway(fakes: Fakes) -> Gateway:
    settings = Settings(
        bucket="test-bucket",
        backends=(BackendConfig(id="runpod", kind=BackendKind.RUNPOD, priority=20),),
        runpod=RunPodSettings(
            endpoint_id="ep1",
            api_key="k",  # type: ignore[arg-type]
            webhook_url="https://hooks.example/runpod",
            webhook_secret="s3cret",  # type: ignore[arg-type]
        ),
    )
    return fake_gateway(settings, fakes)


@pytest.fixture
def webhook(runpod_gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    # Patched where the entry point imports it from: create_app loads the source afresh.
    monkeypatch.setattr("functions.bootstrap.bootstrap", lambda: runpod_gateway)
    return functions_framework.create_app(
        target="runpod_webhook", source=str(RUNPOD_SOURCE), signature_type="http"
    ).test_client()


@pytest.mark.parametrize("token", ["é" * 64, "\u2603", "0" * 63 + "\u0660"])
def test_a_non_ascii_webhook_token_is_refused_as_unauthenticated(
    runpod_gateway: Gateway, webhook: FlaskClient, token: str
) -> None:
    with pytest.raises(Unauthenticated):
        verify_webhook(runpod_gateway, job_id="j1", token=token)
    response = webhook.post("/", query_string={"job": "j1", "token": token}, json={"id": "x"})
    assert response.status_code == 401
    assert response.get_json() == {"error": "unauthenticated"}


def test_a_deeply_nested_webhook_body_is_a_400(
    runpod_gateway: Gateway, webhook: FlaskClient
) -> None:
    query = {"job": "j1", "token": webhook_token(runpod_gateway, "j1")}
    response = webhook.post(
        "/", query_string=query, data=DEEP, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "runpod_rejected"
