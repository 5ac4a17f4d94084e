"""The voice registry over fakes: storage events in any order, any number of times."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from shared.domain.voices import VoiceState, voice_id_for
from shared.usecases.gateway import Gateway
from shared.usecases.registry import (
    Registration,
    StoredObject,
    on_object_deleted,
    on_object_finalized,
)
from tests.support.gateway import Fakes
from tests.support.media import prompt_bytes

NAME = "voice-prompts/narrator.pt"


def drop(fakes: Fakes, data: bytes, *, name: str = NAME, **metadata: str) -> StoredObject:
    """What `gsutil cp` does: write the object; the finalize event describes that generation."""
    blob = fakes.blobs.put(name, data, content_type="application/octet-stream")
    assert blob.generation is not None
    return StoredObject(
        bucket=fakes.blobs.bucket, name=name, generation=blob.generation, size=blob.size,
        metadata=metadata,
    )  # fmt: skip


def voice_id(name: str = NAME) -> str:
    return voice_id_for(bucket="test-bucket", object_name=name)


def test_a_dropped_prompt_is_registered_once(gateway: Gateway, fakes: Fakes) -> None:
    event = drop(fakes, prompt_bytes(), owner="alice", tags="calm, deep")
    assert on_object_finalized(gateway, event) is Registration.REGISTERED
    assert on_object_finalized(gateway, event) is Registration.STALE  # redelivery
    voice = fakes.voices.get(voice_id())
    assert voice is not None
    assert (voice.name, voice.owner, voice.model) == ("From file", "alice", "tiny-base")
    assert voice.traits.tags == ("calm", "deep")
    assert voice.generation == event.generation
    assert voice.ref_text == "A line."


def test_a_sidecar_names_and_tags_the_voice(gateway: Gateway, fakes: Fakes) -> None:
    sidecar = {"name": "Narrator", "character": "old sailor", "tags": ["sea", "gruff"]}
    fakes.blobs.put("voice-prompts/narrator.json", json.dumps(sidecar).encode(), content_type="j")
    on_object_finalized(gateway, drop(fakes, prompt_bytes()))
    voice = fakes.voices.get(voice_id())
    assert voice is not None
    assert voice.name == "Narrator"
    assert voice.traits.character == "old sailor"
    assert voice.traits.tags == ("sea", "gruff")


def test_a_sidecar_written_after_the_prompt_updates_it_once(gateway: Gateway, fakes: Fakes) -> None:
    on_object_finalized(gateway, drop(fakes, prompt_bytes(name="Before")))
    sidecar = drop(
        fakes,
        json.dumps({"name": "After", "tags": "x"}).encode(),
        name="voice-prompts/narrator.json",
    )
    assert on_object_finalized(gateway, sidecar) is Registration.UPDATED
    voice = fakes.voices.get(voice_id())
    assert voice is not None
    assert (voice.name, voice.traits.tags) == ("After", ("x",))
    assert on_object_finalized(gateway, sidecar) is Registration.IGNORED  # nothing new
    assert fakes.voices.get(voice_id()) == voice


def test_an_overwrite_updates_and_its_old_generation_delete_is_ignored(
    gateway: Gateway, fakes: Fakes
) -> None:
    first = drop(fakes, prompt_bytes(name="v1"))
    on_object_finalized(gateway, first)
    second = drop(fakes, prompt_bytes(name="v2"))
    assert on_object_finalized(gateway, second) is Registration.UPDATED
    # GCS sends a delete for the generation an overwrite replaced: the voice must survive it.
    assert on_object_deleted(gateway, first) is Registration.STALE
    # And a late finalize for the old generation changes nothing.
    assert on_object_finalized(gateway, first) is Registration.STALE
    voice = fakes.voices.get(voice_id())
    assert voice is not None
    assert (voice.name, voice.state) == ("v2", VoiceState.ACTIVE)
    assert on_object_deleted(gateway, second) is Registration.DELETED
    deleted = fakes.voices.get(voice_id())
    assert deleted is not None
    assert deleted.state is VoiceState.DELETED


def test_files_outside_the_prefix_or_of_other_types_are_ignored(
    gateway: Gateway, fakes: Fakes
) -> None:
    assert on_object_finalized(gateway, drop(fakes, b"x", name="audio/a.pt")) is (
        Registration.IGNORED
    )
    assert on_object_finalized(gateway, drop(fakes, b"x", name="voice-prompts/a.wav")) is (
        Registration.IGNORED
    )
    assert fakes.voices.query(limit=10) == []


class _Payload:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def _malicious(tmp_path: Path) -> dict[str, bytes]:
    marker = tmp_path / "pwned"
    torch_pickle = tmp_path / "evil.pt"
    torch.save({"items": [_Payload(marker)]}, torch_pickle)
    good = prompt_bytes()
    return {
        "unsafe": torch_pickle.read_bytes(),
        "unsafe-raw-pickle": pickle.dumps(_Payload(marker)),
        "bad_structure": dumps_plain({"items": [{"ref_spk_embedding": "not a tensor"}]}),
        "not_a_prompt_file": good[: len(good) // 2],
    }


def dumps_plain(obj: object) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "kind", ["unsafe", "unsafe-raw-pickle", "bad_structure", "not_a_prompt_file"]
)
def test_a_bad_file_is_quarantined_and_never_executed(
    gateway: Gateway, fakes: Fakes, tmp_path: Path, kind: str
) -> None:
    data = _malicious(tmp_path)[kind]
    event = drop(fakes, data)
    assert on_object_finalized(gateway, event) is Registration.QUARANTINED
    assert not (tmp_path / "pwned").exists()  # the payload's side effect never happened
    assert NAME not in fakes.blobs.objects
    assert fakes.blobs.objects[f"quarantine/{NAME}"][0] == data
    voice = fakes.voices.get(voice_id())
    assert voice is not None
    assert voice.state is VoiceState.QUARANTINED
    assert voice.quarantine_reason is not None
    # The delete event our own move causes leaves the quarantine record alone.
    assert on_object_deleted(gateway, event) is Registration.STALE
    assert fakes.voices.get(voice_id()) == voice


def test_an_oversized_file_is_quarantined_without_being_downloaded(
    gateway: Gateway, fakes: Fakes
) -> None:
    event = drop(fakes, b"PK" + bytes(100))
    huge = StoredObject(
        bucket=event.bucket, name=event.name, generation=event.generation, size=10**9
    )
    assert on_object_finalized(gateway, huge) is Registration.QUARANTINED
    assert fakes.blobs.downloads[NAME] == 0
    voice = fakes.voices.get(voice_id())
    assert voice is not None
    assert voice.quarantine_reason is not None
    assert voice.quarantine_reason.startswith("too_large")
