"""A short-lived in-process cache of backend documents for routing.

Every submit routes, and routing reads each configured backend's document; heartbeats arrive
every 15 s and staleness is judged in tens of seconds, so reading them once every ``ttl_s``
per process changes no decision that matters and takes a Firestore read off each request.
Those that have run out are read again together (one round trip for all of them, not one
each). Writes go straight through and drop the cached copy. Bounded: only configured backends
are looked up, but an id from anywhere (a job's ``backend``) must not grow it without end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from shared.adapters.ttl_cache import TtlCache
from shared.domain.backends import BackendHeartbeat, BackendStatus
from shared.usecases.ports import BackendStore


class CachedBackendStore:
    def __init__(
        self,
        inner: BackendStore,
        *,
        ttl_s: float,
        max_entries: int = 64,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        # ``None`` is cached too: a backend that never reported stays unreported for ``ttl_s``.
        self._entries: TtlCache[str, BackendHeartbeat | None] = TtlCache(
            ttl_s=ttl_s, max_entries=max_entries, monotonic=monotonic
        )

    def get(self, backend_id: str) -> BackendHeartbeat | None:
        return self.get_many([backend_id]).get(backend_id)

    def get_many(self, backend_ids: Sequence[str]) -> dict[str, BackendHeartbeat]:
        found: dict[str, BackendHeartbeat] = {}
        missing: list[str] = []
        for backend_id in dict.fromkeys(backend_ids):
            fresh, beat = self._entries.get(backend_id)
            if not fresh:
                missing.append(backend_id)
            elif beat is not None:
                found[backend_id] = beat
        if missing:
            read = self._inner.get_many(missing)
            for backend_id in missing:
                self._entries.put(backend_id, read.get(backend_id))
            found.update(read)
        return found

    def heartbeat(self, beat: BackendHeartbeat) -> None:
        self._inner.heartbeat(beat)
        self._entries.forget(beat.id)

    def set_queue_depth(self, backend_id: str, depth: int) -> None:
        self._inner.set_queue_depth(backend_id, depth)
        self._entries.forget(backend_id)

    def set_status(self, backend_id: str, status: BackendStatus) -> None:
        self._inner.set_status(backend_id, status)
        self._entries.forget(backend_id)
