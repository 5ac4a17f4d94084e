"""A gateway built from in-memory fakes through the real bootstrap, and keys to call it with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from shared.bootstrap import build_gateway
from shared.domain.keys import Scope, new_api_key
from shared.domain.voices import Voice
from shared.settings import Settings
from shared.usecases.beside import InlineRunner
from shared.usecases.gateway import Gateway
from shared.usecases.ports import WebhookSender
from tests.support.fakes import (
    FakeClock,
    InMemoryApiKeyStore,
    InMemoryAudioCache,
    InMemoryBackendStore,
    InMemoryBlobStore,
    InMemoryEventLog,
    InMemoryJobStore,
    InMemoryJobWatcher,
    InMemoryVoiceStore,
    RecordingPublisher,
    RecordingWebhooks,
)


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
    webhooks: RecordingWebhooks
    cache: InMemoryAudioCache
    watcher: InMemoryJobWatcher


def make_fakes(bucket: str = "test-bucket") -> Fakes:
    jobs = InMemoryJobStore()
    clock = FakeClock()
    return Fakes(
        jobs=jobs,
        blobs=InMemoryBlobStore(bucket),
        publisher=RecordingPublisher(),
        keys=InMemoryApiKeyStore(),
        backends=InMemoryBackendStore(),
        voices=InMemoryVoiceStore(),
        events=InMemoryEventLog(),
        clock=clock,
        webhooks=RecordingWebhooks(),
        cache=InMemoryAudioCache(),
        # Waits told of writes, sleeping on the fake clock (which plays the worker) meanwhile.
        watcher=InMemoryJobWatcher(jobs, sleep=clock.sleep),
    )


def fake_gateway(
    settings: Settings,
    fakes: Fakes,
    *,
    webhooks: WebhookSender | None = None,
    real_time: bool = False,
) -> Gateway:
    """The real bootstrap, every port a fake (or ``webhooks`` a real sender). ``real_time``:
    the bootstrap's own clock, sleep and beside pool instead of the fake clock and inline work
    (for waits that must really wait)."""
    return build_gateway(
        settings,
        jobs=fakes.jobs,
        blobs=fakes.blobs,
        publisher=fakes.publisher,
        keys=fakes.keys,
        backends=fakes.backends,
        voices=fakes.voices,
        events=fakes.events,
        clock=None if real_time else fakes.clock,
        sleep=None if real_time else fakes.clock.sleep,
        webhooks=webhooks or fakes.webhooks,
        cache=fakes.cache,
        # Work beside a request runs at once, in order: what a test asserts has happened.
        tasks=None if real_time else InlineRunner(),
        watcher=fakes.watcher,
    )


def issue_key(gw: Gateway, owner: str, *, admin: bool = False) -> dict[str, str]:
    scopes = frozenset({Scope.USER, Scope.ADMIN} if admin else {Scope.USER})
    secret, record = new_api_key(owner=owner, scopes=scopes, now=gw.clock())
    gw.keys.put(record)
    return {"Authorization": f"Bearer {secret}"}


def add_voice(fakes: Fakes, *, name: str, owner: str | None, voice_id: str) -> Voice:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    voice = Voice(
        id=voice_id,
        name=name,
        owner=owner,
        bucket="test-bucket",
        object_name=f"voice-prompts/{voice_id}.pt",
        generation=1,
        size=10,
        created_at=now,
        updated_at=now,
    )
    fakes.voices.update(voice_id, lambda _: voice)
    return voice
