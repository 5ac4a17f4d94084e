"""The previous relay's routes over fakes: each is an ordinary job, answered as the relay did."""

from __future__ import annotations

import base64

import pytest
from flask.testing import FlaskClient

from shared.domain.synthesis import (
    ClonePromptRequest,
    CustomVoiceRequest,
    NormalizeRequest,
    VoiceCloneRequest,
    VoiceDesignRequest,
)
from tests.support.api import checked
from tests.support.gateway import Fakes, add_voice
from tests.support.media import wav_bytes
from tests.support.worker import ScriptedWorker

CLIP = base64.b64encode(wav_bytes(1.0)).decode()


def post(client: FlaskClient, headers: dict[str, str], path: str, body: dict[str, object]):  # type: ignore[no-untyped-def]
    return checked("POST", path, client.post(path, json=body, headers=headers))


@pytest.mark.parametrize(
    ("path", "body", "kind"),
    [
        ("/api/v1/tts/synthesize", {"text": "Hi.", "speaker": "ryan"}, CustomVoiceRequest),
        (
            "/api/v1/tts/clone",
            {"text": "Hi.", "ref_audio": CLIP, "ref_text": "A line."},
            VoiceCloneRequest,
        ),
        ("/api/v1/tts/design", {"text": "Hi.", "instruct": "a bright voice"}, VoiceDesignRequest),
        ("/api/v1/tts/clone-prompt", {"text": "Hi.", "prompt_id": "Narrator"}, ClonePromptRequest),
        ("/api/v1/audio/normalize", {"audio": CLIP, "target_lufs": -20}, NormalizeRequest),
    ],
)
def test_each_speech_route_answers_wav_with_the_relays_duration_header(
    client: FlaskClient,
    alice: dict[str, str],
    fakes: Fakes,
    path: str,
    body: dict[str, object],
    kind: type,
) -> None:
    ScriptedWorker(fakes)
    add_voice(fakes, name="Narrator", owner="alice", voice_id="v0000000001")
    response = post(client, alice, path, body)
    assert response.status_code == 200
    assert response.mimetype == "audio/wav"
    assert response.headers["X-Duration-Seconds"] == "1.25"
    assert response.headers["Deprecation"] == "true"
    job = fakes.jobs.get(response.headers["X-Job-Id"])
    assert job is not None
    assert isinstance(job.request, kind)


def test_a_prompt_is_created_listed_found_and_deleted_by_name(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    ScriptedWorker(fakes)
    created = post(
        client,
        alice,
        "/api/v1/voices/clone-prompt",
        {"audio": CLIP, "name": "Old Sailor", "ref_text": "A line.", "emotion": "calm"},
    )
    assert created.status_code == 200
    prompt_id = created.json["prompt_id"]  # type: ignore[index]
    assert created.json == {"prompt_id": prompt_id, "name": "Old Sailor", "status": "created"}

    listed = client.get("/api/v1/voices/prompts", headers=alice)
    checked("GET", "/api/v1/voices/prompts", listed)
    assert [p["name"] for p in listed.json["prompts"]] == ["Old Sailor"]  # type: ignore[index]
    assert listed.json["prompts"][0]["emotion"] == "calm"  # type: ignore[index]

    found = client.get("/api/v1/voices/prompts/search?q=sailor", headers=alice)
    assert [p["prompt_id"] for p in found.json["prompts"]] == [prompt_id]  # type: ignore[index]
    missed = client.get("/api/v1/voices/prompts/search?q=pirate", headers=alice)
    assert missed.json == {"prompts": []}

    voices = client.get("/api/v1/tts/voices", headers=alice)
    checked("GET", "/api/v1/tts/voices", voices)
    assert "Vivian" in voices.json["speakers"]  # type: ignore[index]
    assert [p["name"] for p in voices.json["prompts"]] == ["Old Sailor"]  # type: ignore[index]

    path = "/api/v1/voices/prompts/old sailor"
    deleted = checked("DELETE", path, client.delete(path, headers=alice))
    assert deleted.json["status"] == "deleted"  # type: ignore[index]
    gone = checked("DELETE", path, client.delete(path, headers=alice))
    assert gone.status_code == 404


def test_relay_routes_need_a_key_like_every_other(client: FlaskClient) -> None:
    response = client.post("/api/v1/tts/synthesize", json={"text": "Hi."})
    assert response.status_code == 401
