"""A short-lived in-process cache of backend documents for routing.

Every submit routes, and routing reads each configured backend's document; heartbeats arrive
every 15 s and staleness is judged in tens of seconds, so reading them once every ``ttl_s``
per process changes no decision that matters and takes a Firestore read off each request.
Writes go straight through and drop the cached copy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from shared.domain.backends import BackendHeartbeat, BackendStatus
from shared.usecases.ports import BackendStore


class CachedBackendStore:
    def __init__(
        self,
        inner: BackendStore,
        *,
        ttl_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._ttl_s = ttl_s
        self._monotonic = monotonic
        self._entries: dict[str, tuple[float, BackendHeartbeat | None]] = {}
        self._lock = threading.Lock()

    def get(self, backend_id: str) -> BackendHeartbeat | None:
        now = self._monotonic()
        with self._lock:
            hit = self._entries.get(backend_id)
            if hit is not None and hit[0] > now:
                return hit[1]
        beat = self._inner.get(backend_id)
        with self._lock:
            self._entries[backend_id] = (now + self._ttl_s, beat)
        return beat

    def heartbeat(self, beat: BackendHeartbeat) -> None:
        self._inner.heartbeat(beat)
        self._forget(beat.id)

    def set_queue_depth(self, backend_id: str, depth: int) -> None:
        self._inner.set_queue_depth(backend_id, depth)
        self._forget(backend_id)

    def set_status(self, backend_id: str, status: BackendStatus) -> None:
        self._inner.set_status(backend_id, status)
        self._forget(backend_id)

    def _forget(self, backend_id: str) -> None:
        with self._lock:
            self._entries.pop(backend_id, None)
