"""Laid out as deployed, on the emulators: voice files in a bucket of their own (the only one
storage triggers watch), API keys in a Firestore database of their own (the only one the home
worker cannot reach), cache entries that carry their own expiry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import google.cloud.pubsub_v1 as pubsub_v1
from google.cloud import firestore

from infra import topology
from shared.adapters.clients import storage_client
from shared.bootstrap import build_gateway
from shared.domain.jobs import AudioResult
from shared.domain.keys import ApiKey, hash_key
from shared.settings import Settings, VoiceSettings
from shared.usecases.ports import CachedAudio
from tests.integration.conftest import BUCKET

VOICES_BUCKET = f"{BUCKET}-voices"


def _settings(prefix: str) -> Settings:
    return Settings(
        bucket=BUCKET,
        voices=VoiceSettings(bucket=VOICES_BUCKET),
        keys_database=topology.load().firestore.keys_database,
        collection_prefix=prefix,
    )


def test_voice_files_go_to_their_own_bucket_and_everything_else_stays(
    emulator_env: dict[str, str],
) -> None:
    settings = _settings(f"t{uuid.uuid4().hex[:8]}_")
    for _ in range(2):  # idempotent, as for the main bucket
        topology.apply(
            topology.load(),
            project_id=settings.project_id,
            bucket=BUCKET,
            voices_bucket=settings.voices_bucket,
            publisher=pubsub_v1.PublisherClient(),
            subscriber=pubsub_v1.SubscriberClient(),
            storage_client=storage_client(settings),
        )
    gw = build_gateway(settings)
    stem = uuid.uuid4().hex[:8]
    prompt = gw.blobs.put(f"voice-prompts/{stem}.pt", b"p", content_type="application/x")
    audio = gw.blobs.put(f"audio/{stem}/1.wav", b"a", content_type="audio/wav")
    assert prompt.uri == f"gs://{VOICES_BUCKET}/voice-prompts/{stem}.pt"
    assert audio.uri == f"gs://{BUCKET}/audio/{stem}/1.wav"
    # The registry's quarantine move stays in the voices bucket.
    moved = gw.blobs.copy(f"voice-prompts/{stem}.pt", f"quarantine/voice-prompts/{stem}.pt")
    assert moved.uri.startswith(f"gs://{VOICES_BUCKET}/quarantine/")
    assert gw.blobs.delete(f"voice-prompts/{stem}.pt")
    assert gw.blobs.get(f"quarantine/voice-prompts/{stem}.pt") == b"p"
    client = storage_client(settings)
    assert client.bucket(BUCKET).get_blob(f"voice-prompts/{stem}.pt") is None
    assert client.bucket(VOICES_BUCKET).get_blob(f"audio/{stem}/1.wav") is None
    assert f"/{VOICES_BUCKET}/voice-prompts/" in gw.blobs.signed_url(
        f"voice-prompts/{stem}.pt", ttl_s=60
    )


def test_api_keys_live_in_their_own_database(emulator_env: dict[str, str]) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    settings = _settings(prefix)
    gw = build_gateway(settings)
    key = ApiKey(
        key_hash=hash_key(f"tts_{uuid.uuid4().hex}"), owner="o", created_at=datetime.now(UTC)
    )
    gw.keys.put(key)
    assert gw.keys.get(key.key_hash) is not None
    default = firestore.Client(project=settings.project_id)
    keys = firestore.Client(project=settings.project_id, database=settings.keys_database)
    assert keys.collection(f"{prefix}api_keys").document(key.key_hash).get().exists
    assert not default.collection(f"{prefix}api_keys").document(key.key_hash).get().exists


def test_a_cache_entry_expires_with_the_audio_it_points_at(emulator_env: dict[str, str]) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    settings = _settings(prefix)
    gw = build_gateway(settings)
    created = datetime(2026, 11, 1, tzinfo=UTC)
    result = AudioResult(
        uri=f"gs://{BUCKET}/audio/j/1.wav",
        format="wav",
        content_type="audio/wav",
        sample_rate=24000,
        duration_s=1.0,
        bytes=10,
    )
    gw.cache.put(CachedAudio(key="k", job_id="j", result=result, created_at=created))
    stored = (
        firestore.Client(project=settings.project_id)
        .collection(f"{prefix}audio_cache")
        .document("k")
        .get()
    )
    assert stored.get("expires_at") == created + timedelta(days=settings.retention.audio_days)
