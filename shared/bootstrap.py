"""Build the core's dependencies from Settings. Each process's ``bootstrap()`` calls this once;
tests pass fakes (or emulator-bound adapters) through the same function."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime, timedelta

from google.cloud import firestore

from shared.adapters import clients
from shared.adapters.backend_cache import CachedBackendStore
from shared.adapters.background import ThreadedRunner
from shared.adapters.cache_entries import CachedAudioEntries
from shared.adapters.firestore import (
    FirestoreApiKeyStore,
    FirestoreAudioCache,
    FirestoreBackendStore,
    FirestoreEventLog,
    FirestoreJobStore,
    FirestoreJobWatcher,
    FirestoreVoiceStore,
)
from shared.adapters.key_cache import CachedApiKeyStore
from shared.adapters.pubsub import PubSubPublisher, low_latency_publisher
from shared.adapters.watching import Unwatched
from shared.adapters.webhooks import HttpWebhookSender
from shared.settings import Settings
from shared.usecases.gateway import Gateway
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


def utc_now() -> datetime:
    return datetime.now(UTC)


def build_gateway(
    settings: Settings,
    *,
    jobs: JobStore | None = None,
    blobs: BlobStore | None = None,
    publisher: Publisher | None = None,
    keys: ApiKeyStore | None = None,
    backends: BackendStore | None = None,
    voices: VoiceStore | None = None,
    events: EventLog | None = None,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
    webhooks: WebhookSender | None = None,
    cache: AudioCache | None = None,
    tasks: TaskRunner | None = None,
    watcher: JobWatcher | None = None,
) -> Gateway:
    @functools.cache
    def db() -> firestore.Client:
        return clients.firestore_client(settings)

    @functools.cache
    def keys_db() -> firestore.Client:
        # API keys have a database of their own (deployed: tts-keys), out of the worker's reach.
        return clients.firestore_client(settings, database=settings.keys_database)

    prefix = settings.collection_prefix
    sleep = sleep or time.sleep
    if watcher is None:
        # A listener hears only the store it listens to: jobs kept elsewhere (a fake given
        # without its own watcher) are waited on by polling alone.
        watcher = (
            FirestoreJobWatcher(db(), collection=f"{prefix}jobs")
            if jobs is None
            else Unwatched(sleep)
        )
    return Gateway(
        settings=settings,
        jobs=jobs or FirestoreJobStore(db(), collection=f"{prefix}jobs"),
        watcher=watcher,
        blobs=blobs or clients.blob_store(settings),
        publisher=publisher
        or PubSubPublisher(low_latency_publisher(), project_id=settings.project_id),
        keys=keys
        or CachedApiKeyStore(
            FirestoreApiKeyStore(
                keys_db(), collection=f"{prefix}api_keys", signatures=f"{prefix}intake_signatures"
            ),
            ttl_s=settings.api.key_cache_ttl_s,
        ),
        backends=backends
        or CachedBackendStore(
            FirestoreBackendStore(db(), collection=f"{prefix}backends"),
            ttl_s=settings.api.backend_cache_ttl_s,
        ),
        voices=voices or FirestoreVoiceStore(db(), collection=f"{prefix}voices"),
        events=events or FirestoreEventLog(db(), collection=f"{prefix}events"),
        webhooks=webhooks
        or HttpWebhookSender(
            timeout_s=settings.webhooks.timeout_s,
            allow_http=settings.webhooks.allow_http,
            allow_private=settings.webhooks.allow_private,
        ),
        cache=cache
        or CachedAudioEntries(
            FirestoreAudioCache(
                db(),
                collection=f"{prefix}audio_cache",
                keep=timedelta(days=settings.retention.audio_days),
            ),
            ttl_s=settings.api.cache_entry_ttl_s,
            max_entries=settings.api.cache_entries_max,
        ),
        clock=clock or utc_now,
        tasks=tasks
        or ThreadedRunner(
            workers=settings.api.beside_threads, max_pending=settings.api.beside_max_pending
        ),
        sleep=sleep,
    )
