"""An in-process memo of audio-cache entries, in front of ``audio_cache/{key}``.

A cache hit's first round trip is reading its entry. An entry is the same for as long as it
lives: its key hashes everything that decides the audio (a new model, a new voice prompt, a
new seed is another key), the audio it names is never rewritten (each job writes its own
object, deleted only by the bucket's lifecycle), and an entry is replaced only by another
job's audio for the same key, which answers that request as well. So a process may keep what
it read: ``cache.lookup`` still refuses an entry whose audio is near the lifecycle's deletion
(it judges by the entry's ``created_at``, which the copy keeps), and ``ttl_s`` bounds how long
a replaced entry is still served here (either audio is right; the newer one is merely newer).

Only entries that exist are kept: a miss is read again next time, so audio another process
has just made is found at once. Writes go through and replace the copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shared.adapters.ttl_cache import TtlCache
from shared.usecases.ports import AudioCache, CachedAudio


class CachedAudioEntries:
    def __init__(
        self,
        inner: AudioCache,
        *,
        ttl_s: float,
        max_entries: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._entries: TtlCache[str, CachedAudio] = TtlCache(
            ttl_s=ttl_s, max_entries=max_entries, monotonic=monotonic
        )

    def get(self, key: str) -> CachedAudio | None:
        fresh, entry = self._entries.get(key)
        if fresh:
            return entry
        entry = self._inner.get(key)
        if entry is not None:
            self._entries.put(key, entry)
        return entry

    def put(self, entry: CachedAudio) -> None:
        self._inner.put(entry)
        self._entries.put(entry.key, entry)
