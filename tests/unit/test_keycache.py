from __future__ import annotations

from datetime import UTC, datetime

from shared.adapters.key_cache import CachedApiKeyStore
from shared.domain.keys import ApiKey, hash_key
from tests.support.backends import heartbeat
from tests.support.fakes import InMemoryApiKeyStore


class CountingStore(InMemoryApiKeyStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key_hash: str) -> ApiKey | None:
        self.reads += 1
        return super().get(key_hash)


def key(name: str, *, disabled: bool = False) -> ApiKey:
    return ApiKey(
        key_hash=hash_key(name), owner=name, created_at=datetime(2026, 1, 1, tzinfo=UTC),
        disabled=disabled,
    )  # fmt: skip


def test_hits_skip_the_store_until_the_ttl_runs_out() -> None:
    now = [0.0]
    inner = CountingStore()
    inner.put(key("a"))
    cache = CachedApiKeyStore(inner, ttl_s=30, monotonic=lambda: now[0])
    assert cache.get(hash_key("a")) == cache.get(hash_key("a")) == key("a")
    assert inner.reads == 1
    inner.put(key("a", disabled=True))
    now[0] = 31
    refreshed = cache.get(hash_key("a"))
    assert refreshed is not None
    assert refreshed.disabled
    assert inner.reads == 2


def test_missing_keys_are_not_cached_so_new_keys_work_at_once() -> None:
    inner = CountingStore()
    cache = CachedApiKeyStore(inner)
    assert cache.get(hash_key("new")) is None
    inner.put(key("new"))
    assert cache.get(hash_key("new")) == key("new")


def test_the_cache_is_bounded() -> None:
    inner = CountingStore()
    cache = CachedApiKeyStore(inner, max_entries=2)
    for name in "abc":
        inner.put(key(name))
        cache.get(hash_key(name))
    inner.reads = 0
    cache.get(hash_key("a"))  # evicted: read again
    cache.get(hash_key("c"))  # still cached
    assert inner.reads == 1


def test_backend_documents_are_read_once_per_ttl_and_writes_drop_the_copy() -> None:

    from shared.adapters.backend_cache import CachedBackendStore
    from shared.domain.backends import (
        BackendHeartbeat,
        BackendStatus,
    )
    from tests.support.fakes import InMemoryBackendStore

    class CountingStore(InMemoryBackendStore):
        reads = 0

        def get(self, backend_id: str) -> BackendHeartbeat | None:
            self.reads += 1
            return super().get(backend_id)

    now = [0.0]
    inner = CountingStore()
    cached = CachedBackendStore(inner, ttl_s=2.0, monotonic=lambda: now[0])
    beat = heartbeat(backend_id="b", models=())
    assert cached.get("b") is None
    cached.heartbeat(beat)  # a write drops the cached "absent"
    assert cached.get("b") == beat
    assert cached.get("b") == beat
    assert inner.reads == 2
    inner.set_status("b", BackendStatus.OFFLINE)  # behind the cache's back
    assert cached.get("b") == beat  # still within the TTL
    now[0] = 2.5
    refreshed = cached.get("b")
    assert refreshed is not None
    assert refreshed.status is BackendStatus.OFFLINE
