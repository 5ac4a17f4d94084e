"""Integration fixtures: the real Pub/Sub, Firestore and GCS emulators, started once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from google.cloud import pubsub_v1

from infra import topology
from infra.emulators import Emulators
from shared.adapters.clients import storage_client
from shared.bootstrap import build_gateway
from shared.settings import Settings
from shared.usecases.gateway import Gateway

BUCKET = "tts-integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulators]:
    with Emulators(log_dir=tmp_path_factory.mktemp("emulators")) as running:
        yield running


@pytest.fixture(scope="session")
def emulator_env(emulators: Emulators) -> Iterator[dict[str, str]]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in emulators.env.items():
            patch.setenv(name, value)
        settings = Settings(bucket=BUCKET)
        topology.apply(
            topology.load(),
            project_id=settings.project_id,
            bucket=BUCKET,
            publisher=pubsub_v1.PublisherClient(),
            subscriber=pubsub_v1.SubscriberClient(),
            storage_client=storage_client(settings),
        )
        yield emulators.env


@pytest.fixture
def cloud_settings(emulator_env: dict[str, str]) -> Settings:
    # A fresh collection prefix per test: stale messages from other tests name jobs this test's
    # store has never seen, and the runner acks them as unknown (at-least-once in action).
    return Settings(bucket=BUCKET, collection_prefix=f"t{uuid.uuid4().hex[:8]}_")


@pytest.fixture
def cloud_gateway(cloud_settings: Settings) -> Gateway:
    return build_gateway(cloud_settings)
