"""The REST API over fakes: auth, validation, the happy path, and every documented error."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from shared.domain.jobs import AudioResult, JobState
from shared.usecases.gateway import Gateway
from shared.wire.messages import JobMessage
from tests.support.api import GOOD, checked, submit
from tests.support.gateway import Fakes, issue_key


def test_health_needs_no_key(client: FlaskClient) -> None:
    response = checked("GET", "/healthz", client.get("/healthz"))
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}, {"Authorization": ""}],
)
def test_every_other_route_needs_a_valid_key(client: FlaskClient, headers: dict[str, str]) -> None:
    for method, path in [
        ("POST", "/v1/tts/jobs"),
        ("GET", "/v1/jobs/abc"),
        ("GET", "/v1/jobs/abc/audio"),
    ]:
        response = client.open(path, method=method, json=GOOD, headers=headers)
        checked(method, path, response)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_submit_stores_the_job_before_publishing_it(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    response = submit(client, alice)
    assert response.status_code == 202
    body = response.json
    assert body is not None
    assert body["state"] == "queued"
    assert response.headers["Location"] == body["status_url"] == f"/v1/jobs/{body['id']}"

    stored = fakes.jobs.get(body["id"])
    assert stored is not None
    assert stored.owner == "alice"
    assert stored.request.speaker == "Vivian"
    assert stored.backend == "home-4090"

    [message] = fakes.publisher.messages
    assert message.topic == "tts-jobs"
    assert JobMessage.model_validate_json(message.data).job_id == body["id"]
    assert message.attributes == {
        "backend": "home-4090",
        "mode": "custom_voice",
        "api_version": "1",
    }


def test_names_are_normalised(client: FlaskClient, alice: dict[str, str], fakes: Fakes) -> None:
    body = submit(client, alice, {"text": "Hi", "speaker": "uncle_fu", "language": "ZH"}).json
    assert body is not None
    stored = fakes.jobs.get(body["id"])
    assert stored is not None
    assert (stored.request.speaker, stored.request.language) == ("Uncle_Fu", "chinese")


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({**GOOD, "speaker": "Bob"}, "speaker", "unknown speaker"),
        ({**GOOD, "language": "klingon"}, "language", "unknown language"),
        ({**GOOD, "text": ""}, "text", "at least 1 character"),
        ({**GOOD, "text": "   "}, "text", "at least 1 character"),
        ({**GOOD, "text": "x" * 5001}, "text", "the limit is 5000"),
        ({**GOOD, "text": 42}, "text", "valid string"),
        ({**GOOD, "instruct": "x" * 4097}, "instruct", "at most 4096"),
        ({**GOOD, "format": "mp4"}, "format", "wav"),
        ({**GOOD, "surprise": 1}, "surprise", "Extra inputs"),
        ({"speaker": "Vivian"}, "text", "Field required"),
    ],
)
def test_bad_input_is_a_422_naming_the_field_and_makes_no_job(
    client: FlaskClient,
    alice: dict[str, str],
    fakes: Fakes,
    body: dict[str, object],
    field: str,
    fragment: str,
) -> None:
    response = submit(client, alice, body)
    assert response.status_code == 422
    error = response.json["error"]  # type: ignore[index]
    assert error["field"] == field
    assert fragment in error["message"]
    assert fakes.jobs.all() == []
    assert fakes.publisher.messages == []


def test_unknown_speaker_lists_the_valid_ones(client: FlaskClient, alice: dict[str, str]) -> None:
    error = submit(client, alice, {**GOOD, "speaker": "Bob"}).json["error"]  # type: ignore[index]
    assert "Vivian" in error["valid"]
    assert "Sohee" in error["valid"]


def test_unknown_language_lists_the_valid_ones(client: FlaskClient, alice: dict[str, str]) -> None:
    body = {**GOOD, "language": "xx"}
    error = submit(client, alice, body).json["error"]  # type: ignore[index]
    assert {"english", "en", "auto"} <= set(error["valid"])


def test_oversized_body_is_413(client: FlaskClient, alice: dict[str, str], fakes: Fakes) -> None:
    big = json.dumps({**GOOD, "text": "x" * 20_000_000})
    response = client.post(
        "/v1/tts/jobs", data=big, headers={**alice, "Content-Type": "application/json"}
    )
    checked("POST", "/v1/tts/jobs", response)
    assert response.status_code == 413
    assert response.json["error"]["code"] == "payload_too_large"  # type: ignore[index]
    assert fakes.jobs.all() == []


def test_non_json_is_415_and_broken_json_is_400(client: FlaskClient, alice: dict[str, str]) -> None:
    wrong_type = client.post("/v1/tts/jobs", data="text=hi", headers=alice)
    assert checked("POST", "/v1/tts/jobs", wrong_type).status_code == 415
    broken = client.post(
        "/v1/tts/jobs", data="{nope", headers={**alice, "Content-Type": "application/json"}
    )
    assert checked("POST", "/v1/tts/jobs", broken).status_code == 400
    array = client.post("/v1/tts/jobs", json=[GOOD], headers=alice)
    assert checked("POST", "/v1/tts/jobs", array).status_code == 400


def test_idempotency_key_returns_the_same_job(
    client: FlaskClient, gateway: Gateway, alice: dict[str, str], fakes: Fakes
) -> None:
    headers = {**alice, "Idempotency-Key": "chapter-1"}
    first = submit(client, headers).json
    second = submit(client, headers).json
    assert first is not None
    assert second is not None
    assert first["id"] == second["id"]
    assert len(fakes.jobs.all()) == 1
    conflict = submit(client, headers, {**GOOD, "text": "Different."})
    assert conflict.status_code == 409
    # Another owner's identical key is a different job.
    bob = {**issue_key(gateway, "bob"), "Idempotency-Key": "chapter-1"}
    assert submit(client, bob).json["id"] != first["id"]  # type: ignore[index]


def test_a_failed_publish_still_accepts_the_job(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    fakes.publisher.failures = 10
    response = submit(client, alice)
    assert response.status_code == 202
    stored = fakes.jobs.get(response.json["id"])  # type: ignore[index]
    assert stored is not None
    assert stored.state is JobState.QUEUED


def test_a_transient_publish_failure_is_retried(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    fakes.publisher.failures = 2
    assert submit(client, alice).status_code == 202
    assert len(fakes.publisher.messages) == 1


def test_callers_see_only_their_own_jobs_unless_admin(
    client: FlaskClient, gateway: Gateway, alice: dict[str, str]
) -> None:
    job_id = submit(client, alice).json["id"]  # type: ignore[index]
    path = f"/v1/jobs/{job_id}"
    assert checked("GET", path, client.get(path, headers=alice)).status_code == 200
    bob = issue_key(gateway, "bob")
    assert checked("GET", path, client.get(path, headers=bob)).status_code == 404
    admin = issue_key(gateway, "ops", admin=True)
    assert checked("GET", path, client.get(path, headers=admin)).status_code == 200


def test_unknown_and_malformed_job_ids_are_404(client: FlaskClient, alice: dict[str, str]) -> None:
    for job_id in ("nope", "a" * 500, "../etc"):
        response = client.get(f"/v1/jobs/{job_id}", headers=alice)
        assert response.status_code == 404


def test_audio_is_409_until_the_job_succeeds_then_a_signed_redirect(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    job_id = submit(client, alice).json["id"]  # type: ignore[index]
    path = f"/v1/jobs/{job_id}/audio"
    early = checked("GET", path, client.get(path, headers=alice))
    assert early.status_code == 409
    assert early.json["error"]["state"] == "queued"  # type: ignore[index]

    result = AudioResult(
        uri=f"gs://test-bucket/audio/{job_id}.wav",
        format="wav",
        content_type="audio/wav",
        sample_rate=24000,
        duration_s=1.5,
        bytes=72044,
    )
    fakes.jobs.update(
        job_id,
        lambda j: j.claim("w", backend="home-4090", now=fakes.clock(), lease_s=60).succeed(
            "w", attempt=1, result=result, now=fakes.clock()
        ),
    )
    done = checked("GET", path, client.get(path, headers=alice))
    assert done.status_code == 302
    assert done.headers["Location"].startswith(f"https://signed.invalid/test-bucket/audio/{job_id}")
    assert "ttl=900" in done.headers["Location"]
    view = checked("GET", f"/v1/jobs/{job_id}", client.get(f"/v1/jobs/{job_id}", headers=alice))
    assert view.json["audio"]["duration_s"] == 1.5  # type: ignore[index]
    assert view.json["audio"]["url"] == path  # type: ignore[index]


def test_unknown_routes_are_404_json(client: FlaskClient, alice: dict[str, str]) -> None:
    response = client.get("/v1/nothing-here", headers=alice)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"  # type: ignore[index]
