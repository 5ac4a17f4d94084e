"""The voice routes over fakes: listing, visibility, changes, packages and imports."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from shared.domain.catalog import BUILTIN_SPEAKERS
from shared.domain.voices import VoiceState
from shared.usecases.gateway import Gateway
from shared.usecases.registry import Registration, StoredObject, on_object_finalized
from tests.support.api import checked
from tests.support.gateway import Fakes, add_voice, issue_key
from tests.support.media import prompt_bytes, wav_bytes


def get(client: FlaskClient, path: str, headers: dict[str, str], **params: str) -> TestResponse:
    response = client.get(path, headers=headers, query_string=params)
    return checked("GET", path, response)


@pytest.fixture
def library(fakes: Fakes) -> None:
    add_voice(fakes, name="Narrator", owner="alice", voice_id="aaaa00000001")
    add_voice(fakes, name="Villain", owner="alice", voice_id="aaaa00000002")
    add_voice(fakes, name="Shared Bard", owner=None, voice_id="aaaa00000003")
    add_voice(fakes, name="Bob's own", owner="bob", voice_id="bbbb00000001")


@pytest.mark.usefixtures("library")
def test_listing_shows_builtins_then_visible_voices(
    client: FlaskClient, alice: dict[str, str]
) -> None:
    voices = get(client, "/v1/voices", alice).json["voices"]  # type: ignore[index]
    kinds = [(v["kind"], v["name"]) for v in voices]
    assert kinds[:9] == [("builtin", name) for name in BUILTIN_SPEAKERS]
    assert [name for kind, name in kinds if kind == "prompt"] == [
        "Narrator", "Shared Bard", "Villain",
    ]  # fmt: skip


@pytest.mark.usefixtures("library")
def test_listing_pages_without_gaps_or_repeats(client: FlaskClient, alice: dict[str, str]) -> None:
    seen: list[str] = []
    token = ""
    while True:
        params = {"page_size": "4", **({"page_token": token} if token else {})}
        page = get(client, "/v1/voices", alice, **params).json
        assert page is not None
        seen += [v["id"] for v in page["voices"]]
        token = page["next_page_token"]
        if not token:
            break
    assert len(seen) == len(set(seen)) == 9 + 3


@pytest.mark.usefixtures("library")
def test_search_and_filters(client: FlaskClient, alice: dict[str, str], fakes: Fakes) -> None:
    found = get(client, "/v1/voices", alice, q="bard").json["voices"]  # type: ignore[index]
    assert [v["name"] for v in found] == ["Shared Bard"]
    assert get(client, "/v1/voices", alice, q="bob").json["voices"] == []  # type: ignore[index]
    response = client.patch(
        "/v1/voices/aaaa00000001", json={"character": "Mira", "tags": ["calm"]}, headers=alice
    )
    checked("PATCH", "/v1/voices/aaaa00000001", response)
    assert response.status_code == 200
    by_tag = get(client, "/v1/voices", alice, tag="calm").json["voices"]  # type: ignore[index]
    assert [v["id"] for v in by_tag] == ["aaaa00000001"]
    by_character = get(client, "/v1/voices", alice, character="Mira").json["voices"]  # type: ignore[index]
    assert [v["name"] for v in by_character] == ["Narrator"]


@pytest.mark.usefixtures("library")
def test_only_owners_and_admins_change_voices(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway
) -> None:
    assert get(client, "/v1/voices/bbbb00000001", alice).status_code == 404
    shared = client.patch("/v1/voices/aaaa00000003", json={"name": "Mine"}, headers=alice)
    assert checked("PATCH", "/v1/voices/aaaa00000003", shared).status_code == 403
    assert client.delete("/v1/voices/aaaa00000003", headers=alice).status_code == 403
    admin = issue_key(gateway, "root", admin=True)
    renamed = client.patch("/v1/voices/aaaa00000003", json={"name": "Bard"}, headers=admin)
    assert renamed.json["name"] == "Bard"  # type: ignore[index]


def test_a_builtin_speaker_reads_by_its_name(client: FlaskClient, alice: dict[str, str]) -> None:
    view = get(client, "/v1/voices/uncle_fu", alice).json
    assert view is not None
    assert (view["kind"], view["name"]) == ("builtin", "Uncle_Fu")


def test_a_package_imports_back_as_a_new_voice(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    """An import survives the process: it is files in the
    bucket plus a registry record, both of which outlive every process."""
    fakes.blobs.put("voice-prompts/orig.pt", prompt_bytes(), content_type="x")
    fakes.blobs.put("voice-prompts/orig.ref.wav", wav_bytes(), content_type="audio/wav")
    sidecar = {"name": "Original", "emotion": "sad", "reference_path": "voice-prompts/orig.ref.wav"}
    fakes.blobs.put("voice-prompts/orig.json", json.dumps(sidecar).encode(), content_type="j")
    event = StoredObject(
        bucket="test-bucket",
        name="voice-prompts/orig.pt",
        generation=fakes.blobs.generations["voice-prompts/orig.pt"],
        size=len(fakes.blobs.objects["voice-prompts/orig.pt"][0]),
        metadata={"owner": "alice"},
    )
    assert on_object_finalized(gateway, event) is Registration.REGISTERED
    original = fakes.voices.query(limit=10)[0]

    package = get(client, f"/v1/voices/{original.id}/package", alice)
    assert package.status_code == 200
    with zipfile.ZipFile(io.BytesIO(package.data)) as archive:
        assert sorted(archive.namelist()) == ["prompt.pt", "reference.wav", "voice.json"]
        assert json.loads(archive.read("voice.json"))["emotion"] == "sad"

    imported = client.post(
        "/v1/voices/import",
        data={"package": (io.BytesIO(package.data), "voice.zip")},
        headers=alice,
        content_type="multipart/form-data",
    )
    checked("POST", "/v1/voices/import", imported)
    assert imported.status_code == 202
    new_id = imported.json["voice_id"]  # type: ignore[index]
    assert get(client, f"/v1/voices/{new_id}", alice).status_code == 404  # until the event

    # The storage event for the imported prompt (here delivered by hand) registers it.
    name = next(p for p in fakes.blobs.objects if p.endswith(".pt") and "orig" not in p)
    data = fakes.blobs.objects[name][0]
    on_object_finalized(
        gateway,
        StoredObject(
            bucket="test-bucket", name=name, generation=fakes.blobs.generations[name],
            size=len(data),
        ),
    )  # fmt: skip
    copy = get(client, f"/v1/voices/{new_id}", alice).json
    assert copy is not None
    assert (copy["name"], copy["emotion"], copy["owner"]) == ("Original", "sad", "alice")
    assert copy["state"] == VoiceState.ACTIVE


@pytest.mark.parametrize(
    ("members", "status"),
    [
        ({"voice.json": b"{}", "prompt.pt": b"x"}, 422),  # metadata without a name
        ({"voice.json": b'{"name": "x"}'}, 422),  # no prompt
        ({"voice.json": b'{"name": "x"}', "prompt.pt": b"x", "evil.sh": b"x"}, 422),
    ],
)
def test_bad_packages_are_refused(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes, members: dict[str, bytes], status: int
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    response = client.post(
        "/v1/voices/import",
        data=buffer.getvalue(),
        headers={**alice, "Content-Type": "application/zip"},
    )
    assert checked("POST", "/v1/voices/import", response).status_code == status
    assert not any(p.endswith(".pt") for p in fakes.blobs.objects)


def test_a_package_member_bomb_is_refused_before_inflating(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("voice.json", b'{"name": "x"}')
        archive.writestr("prompt.pt", bytes(gateway.settings.voices.max_prompt_bytes + 1))
    assert len(buffer.getvalue()) < 100_000
    response = client.post(
        "/v1/voices/import",
        data=buffer.getvalue(),
        headers={**alice, "Content-Type": "application/zip"},
    )
    assert checked("POST", "/v1/voices/import", response).status_code == 413
