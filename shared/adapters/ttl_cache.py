"""A bounded, thread-safe, in-process memo: each entry lives ``ttl_s``, the least recently used
goes first once ``max_entries`` are held.

The store caches in front of Firestore (API keys, backend documents, audio-cache entries) are
built on it. Each lives on an object the bootstrap builds, one per gateway: nothing here is a
module-level singleton, and a test builds its own with its own clock.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(
        self,
        *,
        ttl_s: float,
        max_entries: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("a TtlCache holds at least one entry")
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> tuple[bool, V | None]:
        """``(True, value)`` while ``key`` holds a fresh value (which may be ``None``), else
        ``(False, None)``; an expired entry is dropped as it is found."""
        now = self._monotonic()
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return False, None
            if hit[0] <= now:
                del self._entries[key]
                return False, None
            self._entries.move_to_end(key)
            return True, hit[1]

    def put(self, key: K, value: V) -> None:
        if self._ttl_s <= 0:
            return  # caching switched off: every read goes through
        expires = self._monotonic() + self._ttl_s
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def forget(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
