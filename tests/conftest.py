"""Fixtures shared by every layer: a gateway built from fakes through the real bootstrap."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from flask.testing import FlaskClient

from functions.api.app import create_api
from shared.auth import Scope, new_api_key
from shared.bootstrap import build_gateway
from shared.fakes import (
    FakeClock,
    InMemoryApiKeyStore,
    InMemoryBackendStore,
    InMemoryBlobStore,
    InMemoryEventLog,
    InMemoryJobStore,
    InMemoryVoiceStore,
    RecordingPublisher,
)
from shared.service import Gateway
from shared.settings import Settings


@dataclass
class Fakes:
    jobs: InMemoryJobStore
    blobs: InMemoryBlobStore
    publisher: RecordingPublisher
    keys: InMemoryApiKeyStore
    backends: InMemoryBackendStore
    voices: InMemoryVoiceStore
    events: InMemoryEventLog
    clock: FakeClock


@pytest.fixture
def fakes() -> Fakes:
    return Fakes(
        jobs=InMemoryJobStore(),
        blobs=InMemoryBlobStore("test-bucket"),
        publisher=RecordingPublisher(),
        keys=InMemoryApiKeyStore(),
        backends=InMemoryBackendStore(),
        voices=InMemoryVoiceStore(),
        events=InMemoryEventLog(),
        clock=FakeClock(),
    )


@pytest.fixture
def settings() -> Settings:
    return Settings(bucket="test-bucket")


@pytest.fixture
def gateway(settings: Settings, fakes: Fakes) -> Gateway:
    return fake_gateway(settings, fakes)


def fake_gateway(settings: Settings, fakes: Fakes) -> Gateway:
    """The real bootstrap, every port a fake."""
    return build_gateway(
        settings,
        jobs=fakes.jobs,
        blobs=fakes.blobs,
        publisher=fakes.publisher,
        keys=fakes.keys,
        backends=fakes.backends,
        voices=fakes.voices,
        events=fakes.events,
        clock=fakes.clock,
    )


def issue_key(gw: Gateway, owner: str, *, admin: bool = False) -> dict[str, str]:
    scopes = frozenset({Scope.USER, Scope.ADMIN} if admin else {Scope.USER})
    secret, record = new_api_key(owner=owner, scopes=scopes, now=gw.clock())
    gw.keys.put(record)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def alice(gateway: Gateway) -> dict[str, str]:
    return issue_key(gateway, "alice")


@pytest.fixture
def client(gateway: Gateway) -> FlaskClient:
    return create_api(gateway).test_client()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random custom-voice Qwen3-TTS model, built offline: real code path, noise for audio."""
    from gpu_worker.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "custom_voice"))


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One tiny model of each type (custom_voice, voice_design, base), by type."""
    from gpu_worker.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-all")
    return {
        model_type: str(build_tiny_model(root / model_type, model_type=model_type))
        for model_type in ("custom_voice", "voice_design", "base")
    }
