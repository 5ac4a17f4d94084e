"""The deployed entry point itself, through functions-framework's own app and test client."""

from __future__ import annotations

import json
from pathlib import Path

import functions_framework
import pytest
from flask.testing import FlaskClient

from shared.bootstrap import build_gateway
from shared.domain.jobs import JobState
from shared.domain.keys import Scope, new_api_key
from shared.settings import Settings
from tests.support.contracts import validate_response

SOURCE = Path(__file__).resolve().parents[2] / "functions" / "main.py"


@pytest.fixture
def function(cloud_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    monkeypatch.setenv("TTS_BUCKET", cloud_settings.bucket)
    monkeypatch.setenv("TTS_COLLECTION_PREFIX", cloud_settings.collection_prefix)
    app = functions_framework.create_app(target="api", source=str(SOURCE))
    return app.test_client()


@pytest.fixture
def key(cloud_settings: Settings) -> dict[str, str]:
    gw = build_gateway(cloud_settings)
    secret, record = new_api_key(owner="carol", scopes=frozenset({Scope.USER}), now=gw.clock())
    gw.keys.put(record)
    return {"Authorization": f"Bearer {secret}"}


def test_submit_and_read_back_through_the_function(
    function: FlaskClient, key: dict[str, str], cloud_settings: Settings
) -> None:
    body = {"text": "Through the real entry point.", "speaker": "Sohee", "language": "ko"}
    response = function.post("/v1/tts/jobs", json=body, headers=key)
    validate_response("POST", "/v1/tts/jobs", response.status_code, response.get_json())
    assert response.status_code == 202
    job_id = response.get_json()["id"]
    stored = build_gateway(cloud_settings).jobs.get(job_id)
    assert stored is not None
    assert stored.state is JobState.QUEUED

    view = function.get(f"/v1/jobs/{job_id}", headers=key)
    validate_response("GET", f"/v1/jobs/{job_id}", view.status_code, view.get_json())
    assert view.get_json()["state"] == "queued"
    assert function.get("/healthz").get_json() == {"status": "ok"}


def test_an_oversized_body_is_a_json_413_not_a_crash(
    function: FlaskClient, key: dict[str, str]
) -> None:
    big = json.dumps({"text": "x" * 20_000_000, "speaker": "Vivian"})
    response = function.post(
        "/v1/tts/jobs", data=big, headers={**key, "Content-Type": "application/json"}
    )
    validate_response("POST", "/v1/tts/jobs", response.status_code, response.get_json())
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    unauthenticated = function.post(
        "/v1/tts/jobs", data=big, headers={"Content-Type": "application/json"}
    )
    assert unauthenticated.status_code == 401
