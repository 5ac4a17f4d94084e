"""The gateway: every port the use cases talk through, built once per process by a
``bootstrap()`` (tests pass fakes or emulator-bound adapters through the same one)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.settings import Settings
from shared.usecases.ports import (
    ApiKeyStore,
    AudioCache,
    BackendStore,
    BlobStore,
    Clock,
    EventLog,
    JobStore,
    JobWatcher,
    Publisher,
    Sleep,
    TaskRunner,
    VoiceStore,
    WebhookSender,
)


def random_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, kw_only=True)
class Gateway:
    """Everything the core needs, built once per process by a ``bootstrap()``."""

    settings: Settings
    jobs: JobStore
    watcher: JobWatcher
    """Tells a waiting call that its job's document changed (a listener on ``jobs``)."""
    blobs: BlobStore
    publisher: Publisher
    keys: ApiKeyStore
    backends: BackendStore
    voices: VoiceStore
    events: EventLog
    webhooks: WebhookSender | None
    """``None`` where the process must never call out (the GPU worker, on the home network):
    its webhook deliveries stay due on the job for the monitor."""
    cache: AudioCache
    clock: Clock
    tasks: TaskRunner
    """Where work beside a request runs (a read beside a write, what may follow an answer)."""
    sleep: Sleep = field(default=time.sleep)
    new_id: Callable[[], str] = field(default=random_id)

    def object_path(self, uri: str) -> str:
        """The object path of a ``gs://`` URI of this gateway's bucket."""
        return uri.removeprefix(f"gs://{self.settings.bucket}/")
