"""Every speech mode through the API over fakes: what is stored, routed and refused."""

from __future__ import annotations

import base64
import io

import pytest
from flask.testing import FlaskClient

from shared.domain.jobs import Job
from shared.domain.synthesis import ClonePromptRequest, VoiceCloneRequest, VoiceDesignRequest
from shared.usecases.gateway import Gateway
from tests.support.api import checked, submit
from tests.support.backends import heartbeat
from tests.support.gateway import Fakes, add_voice, issue_key
from tests.support.media import wav_bytes


def stored(fakes: Fakes, job_id: str) -> Job:
    job = fakes.jobs.get(job_id)
    assert job is not None
    return job


def advertise(fakes: Fakes, *modes: str) -> None:
    fakes.backends.heartbeat(heartbeat(modes=modes))


def test_voice_design_is_stored_with_its_description(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    body = {"mode": "voice_design", "text": "Hi.", "instruct": "a gravelly old sailor", "seed": 7}
    response = submit(client, alice, body)
    assert response.status_code == 202
    job = stored(fakes, response.json["id"])  # type: ignore[index]
    assert job.request == VoiceDesignRequest(text="Hi.", instruct="a gravelly old sailor", seed=7)
    assert fakes.publisher.messages[0].attributes["mode"] == "voice_design"


def test_voice_clone_audio_is_stored_first_and_referenced(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    audio = wav_bytes()
    body = {
        "mode": "voice_clone",
        "text": "Hello.",
        "ref_audio": base64.b64encode(audio).decode(),
        "ref_text": "A reference line.",
    }
    response = submit(client, alice, body)
    assert response.status_code == 202
    request = stored(fakes, response.json["id"]).request  # type: ignore[index]
    assert isinstance(request, VoiceCloneRequest)
    assert request.reference.container == "wav"
    # The job holds a reference, never the bytes (no bytes-versus-base64 confusion downstream).
    assert fakes.blobs.objects[request.reference.path][0] == audio
    assert "ref_audio" not in request.model_dump()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ref_audio": "not base64!!", "ref_text": "x"}, "ref_audio"),
        (
            {"ref_audio": base64.b64encode(b"plain text, no audio").decode(), "ref_text": "x"},
            "ref_audio",
        ),
        ({"ref_audio": base64.b64encode(wav_bytes()).decode()}, "body"),
    ],
)
def test_voice_clone_rejects_bad_reference_input(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes, body: dict[str, str], field: str
) -> None:
    response = submit(client, alice, {"mode": "voice_clone", "text": "Hello.", **body})
    assert response.status_code == 422
    assert response.json["error"]["field"] == field  # type: ignore[index]
    assert fakes.jobs.all() == []


def test_x_vector_only_clone_needs_no_transcript(
    client: FlaskClient, alice: dict[str, str]
) -> None:
    body = {
        "mode": "voice_clone",
        "text": "Hello.",
        "ref_audio": base64.b64encode(wav_bytes(fmt="FLAC")).decode(),
        "x_vector_only": True,
    }
    assert submit(client, alice, body).status_code == 202


def test_an_oversized_reference_is_refused(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway
) -> None:
    limit = gateway.settings.voices.max_audio_bytes
    body = {
        "mode": "voice_clone",
        "text": "Hello.",
        "ref_audio": base64.b64encode(b"RIFF" + bytes(limit)).decode(),
        "x_vector_only": True,
    }
    response = submit(client, alice, body)
    assert response.status_code == 413


def test_clone_prompt_resolves_a_voice_by_name_or_id(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    add_voice(fakes, name="Narrator", owner="alice", voice_id="a1b2c3d4e5f6")
    for ref in ("narrator", "a1b2c3d4e5f6"):
        response = submit(client, alice, {"mode": "clone_prompt", "text": "Hi.", "voice": ref})
        assert response.status_code == 202
        request = stored(fakes, response.json["id"]).request  # type: ignore[index]
        assert request == ClonePromptRequest(text="Hi.", voice_id="a1b2c3d4e5f6")


def test_clone_prompt_cannot_use_someone_elses_voice(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    add_voice(fakes, name="Private", owner="bob", voice_id="b0b0b0b0b0b0")
    response = submit(client, alice, {"mode": "clone_prompt", "text": "Hi.", "voice": "private"})
    assert response.status_code == 404
    response = submit(
        client, alice, {"mode": "clone_prompt", "text": "Hi.", "voice": "b0b0b0b0b0b0"}
    )
    assert response.status_code == 404


def test_an_ambiguous_voice_name_asks_for_an_id(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    add_voice(fakes, name="Twin", owner="alice", voice_id="aaaaaaaa1111")
    add_voice(fakes, name="twin", owner=None, voice_id="aaaaaaaa2222")
    response = submit(client, alice, {"mode": "clone_prompt", "text": "Hi.", "voice": "Twin"})
    assert response.status_code == 409
    assert response.json["error"]["voice_ids"] == ["aaaaaaaa1111", "aaaaaaaa2222"]  # type: ignore[index]


def test_a_mode_no_backend_loaded_is_refused_with_the_reason(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    advertise(fakes, "custom_voice")
    body = {"mode": "voice_design", "text": "Hi.", "instruct": "a whisper"}
    response = submit(client, alice, body)
    assert response.status_code == 503
    error = response.json["error"]  # type: ignore[index]
    assert error["code"] == "no_backend"
    assert error["offered"] == {"home-4090": ["custom_voice"]}
    assert fakes.jobs.all() == []
    assert submit(client, alice).status_code == 202  # custom_voice still routes


def test_a_seed_outside_the_range_is_refused(client: FlaskClient, alice: dict[str, str]) -> None:
    response = submit(client, alice, {"text": "Hi.", "speaker": "ryan", "seed": -1})
    assert response.status_code == 422
    assert response.json["error"]["field"] == "seed"  # type: ignore[index]


def test_multipart_voice_creation(client: FlaskClient, alice: dict[str, str], fakes: Fakes) -> None:
    audio = wav_bytes(fmt="OGG")
    response = client.post(
        "/v1/voices",
        data={
            "name": "Captain",
            "ref_text": "Ahoy there.",
            "character": "captain",
            "tags": "pirate, sea",
            "ref_audio": (io.BytesIO(audio), "ref.ogg"),
        },
        headers=alice,
        content_type="multipart/form-data",
    )
    checked("POST", "/v1/voices", response)
    assert response.status_code == 202
    job = stored(fakes, response.json["id"])  # type: ignore[index]
    assert job.request.mode == "create_voice"
    assert job.request.traits.tags == ("pirate", "sea")  # type: ignore[union-attr]
    assert fakes.blobs.objects[job.request.reference.path][0] == audio  # type: ignore[union-attr]


def test_delete_is_a_delete_route(client: FlaskClient, fakes: Fakes, gateway: Gateway) -> None:
    """Deleting is DELETE on the resource, on every path: one route table, one verb."""
    admin = issue_key(gateway, "root", admin=True)
    add_voice(fakes, name="Gone", owner=None, voice_id="d1d1d1d1d1d1")
    fakes.blobs.put("voice-prompts/d1d1d1d1d1d1.pt", b"x", content_type="x")
    assert client.post("/v1/voices/d1d1d1d1d1d1/delete", headers=admin).status_code in (404, 405)
    response = client.delete("/v1/voices/d1d1d1d1d1d1", headers=admin)
    assert response.status_code == 204
    assert fakes.voices.get("d1d1d1d1d1d1") is None
    assert "voice-prompts/d1d1d1d1d1d1.pt" not in fakes.blobs.objects


def test_a_reference_declared_too_long_is_refused_before_any_job(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes, gateway: Gateway
) -> None:
    limit = gateway.settings.voices.max_reference_s
    body = {
        "mode": "voice_clone",
        "text": "Hello.",
        "ref_audio": base64.b64encode(wav_bytes(limit + 1, fmt="FLAC")).decode(),
        "x_vector_only": True,
    }
    response = submit(client, alice, body)
    assert response.status_code == 422
    assert response.json["error"]["field"] == "ref_audio"  # type: ignore[index]
    assert response.json["error"]["max_duration_s"] == limit  # type: ignore[index]
    assert fakes.jobs.all() == []
    assert fakes.blobs.objects == {}
