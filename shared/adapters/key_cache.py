"""A short-lived in-process cache in front of the API-key store.

Every request is authenticated; without a cache each one pays a Firestore read. Only keys that
exist are cached, so a new key works at once; disabling a key takes effect within ``ttl_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from shared.adapters.ttl_cache import TtlCache
from shared.domain.keys import ApiKey
from shared.usecases.ports import ApiKeyStore


class CachedApiKeyStore:
    def __init__(
        self,
        inner: ApiKeyStore,
        *,
        ttl_s: float = 30.0,
        max_entries: int = 1024,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._entries: TtlCache[str, ApiKey] = TtlCache(
            ttl_s=ttl_s, max_entries=max_entries, monotonic=monotonic
        )

    def get(self, key_hash: str) -> ApiKey | None:
        fresh, cached = self._entries.get(key_hash)
        if fresh:
            return cached
        key = self._inner.get(key_hash)
        if key is not None:
            self._entries.put(key_hash, key)
        return key

    def find_by_id(self, key_id: str) -> ApiKey | None:
        return self._inner.find_by_id(key_id)  # the intake's path: rare enough to read through

    def put(self, key: ApiKey) -> None:
        self._inner.put(key)
        self._entries.forget(key.key_hash)

    def list_keys(self, *, owner: str | None) -> list[ApiKey]:
        return self._inner.list_keys(owner=owner)

    def note_signature(self, digest: str, *, message_id: str, expires_at: datetime) -> str:
        return self._inner.note_signature(digest, message_id=message_id, expires_at=expires_at)
