"""The storage-event function on the emulators, through functions-framework's own client.

The GCS emulator sends no notifications, so each test writes the object for real and then
delivers the CloudEvent GCS would send (structured mode, as Eventarc does).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import functions_framework
import pytest
import torch
from flask.testing import FlaskClient
from google.cloud import storage

from shared.adapters.clients import storage_client
from shared.bootstrap import build_gateway
from shared.domain.voice_file import PromptItem, VoicePromptFile, dumps
from shared.domain.voices import VoiceState, voice_id_for
from shared.settings import Settings
from shared.usecases.gateway import Gateway
from tests.support.contracts import validate_schema
from tests.support.firestore import as_json

SOURCE = Path(__file__).resolve().parents[2] / "functions" / "events.py"


@pytest.fixture
def events(cloud_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    monkeypatch.setenv("TTS_BUCKET", cloud_settings.bucket)
    monkeypatch.setenv("TTS_COLLECTION_PREFIX", cloud_settings.collection_prefix)
    app = functions_framework.create_app(
        target="voice_object_event", source=str(SOURCE), signature_type="cloudevent"
    )
    return app.test_client()


@pytest.fixture
def bucket(cloud_settings: Settings) -> storage.Bucket:
    return storage_client(cloud_settings).bucket(cloud_settings.bucket)


def prompt() -> bytes:
    item = PromptItem(
        ref_code=None,
        ref_spk_embedding=torch.randn(32),
        x_vector_only_mode=True,
        icl_mode=False,
    )
    return dumps(VoicePromptFile(items=(item,), metadata={}))


def upload(bucket: storage.Bucket, path: str, data: bytes, **metadata: str) -> storage.Blob:
    blob = bucket.blob(path)
    blob.metadata = metadata or None
    blob.upload_from_string(data, content_type="application/octet-stream")
    blob.reload()
    return blob


def deliver(events: FlaskClient, blob: storage.Blob, *, kind: str = "finalized") -> None:
    envelope = {
        "specversion": "1.0",
        "id": f"{blob.name}-{blob.generation}-{kind}",
        "source": f"//storage.googleapis.com/projects/_/buckets/{blob.bucket.name}",
        "type": f"google.cloud.storage.object.v1.{kind}",
        "subject": f"objects/{blob.name}",
        "time": "2026-11-23T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {
            "bucket": blob.bucket.name,
            "name": blob.name,
            # int64 fields arrive as JSON strings.
            "generation": str(blob.generation),
            "metageneration": "1",
            "size": str(blob.size),
            "contentType": blob.content_type,
            "md5Hash": blob.md5_hash,
            "metadata": blob.metadata or {},
        },
    }
    response = events.post(
        "/", data=json.dumps(envelope), headers={"Content-Type": "application/cloudevents+json"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)


def test_a_dropped_prompt_registers_and_a_delete_forgets_it(
    events: FlaskClient, bucket: storage.Bucket, cloud_gateway: Gateway, cloud_settings: Settings
) -> None:
    blob = upload(bucket, "voice-prompts/drop-in.pt", prompt(), name="Drop In", tags="a,b")
    deliver(events, blob)
    deliver(events, blob)  # at-least-once
    voice_id = voice_id_for(bucket=bucket.name, object_name=blob.name)
    voice = cloud_gateway.voices.get(voice_id)
    assert voice is not None
    assert (voice.name, voice.traits.tags, voice.generation) == (
        "Drop In",
        ("a", "b"),
        blob.generation,
    )
    assert voice.x_vector_only
    validate_schema("voice-document.schema.json", as_json(voice.model_dump(mode="json")))
    # Voices must not live in one process's memory: a fresh process reads the same record.
    assert build_gateway(cloud_settings).voices.get(voice_id) == voice
    assert [v.id for v in cloud_gateway.voices.query(tag="a", limit=10)] == [voice_id]

    blob.delete()
    deliver(events, blob, kind="deleted")
    gone = cloud_gateway.voices.get(voice_id)
    assert gone is not None
    assert gone.state is VoiceState.DELETED
    assert cloud_gateway.voices.query(tag="a", limit=10) == []


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_a_malicious_prompt_is_quarantined_and_never_run(
    events: FlaskClient, bucket: storage.Bucket, cloud_gateway: Gateway, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"items": [_Payload(marker)]}, buffer)
    blob = upload(bucket, "voice-prompts/evil.pt", buffer.getvalue())
    deliver(events, blob)
    assert not marker.exists()
    assert bucket.get_blob("voice-prompts/evil.pt") is None
    assert bucket.get_blob("quarantine/voice-prompts/evil.pt") is not None
    voice = cloud_gateway.voices.get(voice_id_for(bucket=bucket.name, object_name=blob.name))
    assert voice is not None
    assert voice.state is VoiceState.QUARANTINED
    assert voice.quarantine_reason is not None
    assert voice.quarantine_reason.startswith("unsafe")
