"""`python -m infra apply` on the emulators: idempotent; the bucket expires uploads and audio."""

from __future__ import annotations

import google.cloud.pubsub_v1 as pubsub_v1

from infra import topology
from shared.adapters.clients import storage_client
from shared.settings import Settings
from tests.integration.conftest import BUCKET


def test_apply_twice_and_uploads_expire(emulator_env: dict[str, str]) -> None:
    settings = Settings(bucket=BUCKET)
    for _ in range(2):  # existing resources are left as they are
        topology.apply(
            topology.load(),
            project_id=settings.project_id,
            bucket=BUCKET,
            publisher=pubsub_v1.PublisherClient(),
            subscriber=pubsub_v1.SubscriberClient(),
            storage_client=storage_client(settings),
        )
    bucket = storage_client(settings).get_bucket(BUCKET)
    assert list(bucket.lifecycle_rules) == [
        {"action": {"type": "Delete"}, "condition": {"age": 7, "matchesPrefix": ["uploads/"]}},
        {"action": {"type": "Delete"}, "condition": {"age": 30, "matchesPrefix": ["audio/"]}},
    ]
    assert Settings().voices.upload_prefix == "uploads/"
