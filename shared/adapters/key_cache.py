"""A short-lived in-process cache in front of the API-key store.

Every request is authenticated; without a cache each one pays a Firestore read. Only keys that
exist are cached, so a new key works at once; disabling a key takes effect within ``ttl_s``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

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
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._entries: OrderedDict[str, tuple[float, ApiKey]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> ApiKey | None:
        now = self._monotonic()
        with self._lock:
            hit = self._entries.get(key_hash)
            if hit is not None and hit[0] > now:
                self._entries.move_to_end(key_hash)
                return hit[1]
        key = self._inner.get(key_hash)
        if key is not None:
            with self._lock:
                self._entries[key_hash] = (now + self._ttl_s, key)
                self._entries.move_to_end(key_hash)
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
        return key

    def find_by_id(self, key_id: str) -> ApiKey | None:
        return self._inner.find_by_id(key_id)  # the intake's path: rare enough to read through

    def put(self, key: ApiKey) -> None:
        self._inner.put(key)
        with self._lock:
            self._entries.pop(key.key_hash, None)

    def list_keys(self, *, owner: str | None) -> list[ApiKey]:
        return self._inner.list_keys(owner=owner)

    def note_signature(self, digest: str, *, message_id: str, expires_at: datetime) -> str:
        return self._inner.note_signature(digest, message_id=message_id, expires_at=expires_at)
