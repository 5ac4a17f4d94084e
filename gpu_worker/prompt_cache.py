"""Voice prompts fetched on demand and kept in memory, bounded by bytes.

Keyed by the prompt's object *and* its GCS generation: an overwritten prompt is a new key, so
a worker can never speak with a stale voice, and a second use of the same generation
downloads nothing. Where the bytes come from (the bucket, a signed URL) is the caller's.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from shared.domain.voice_file import VoicePromptFile, loads


class PromptCache:
    def __init__(self, *, max_bytes: int, max_file_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._max_file_bytes = max_file_bytes
        self._entries: OrderedDict[tuple[str, int], tuple[VoicePromptFile, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def fetch(self, key: str, *, generation: int, download: Callable[[], bytes]) -> VoicePromptFile:
        entry = (key, generation)
        with self._lock:
            if entry in self._entries:
                self._entries.move_to_end(entry)
                return self._entries[entry][0]
        data = download()
        prompt = loads(data, max_bytes=self._max_file_bytes)
        with self._lock:
            if entry not in self._entries and len(data) <= self._max_bytes:
                self._entries[entry] = (prompt, len(data))
                self._bytes += len(data)
                while self._bytes > self._max_bytes:
                    _, (_, size) = self._entries.popitem(last=False)
                    self._bytes -= size
        return prompt
