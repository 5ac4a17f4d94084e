"""Voice prompts fetched on demand and kept in memory, bounded by bytes.

Keyed by object name *and* GCS generation: an overwritten prompt is a new key, so a worker can
never speak with a stale voice, and a second use of the same generation downloads nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from shared.ports import BlobStore
from shared.voice_file import VoicePromptFile, loads


class PromptCache:
    def __init__(self, *, blobs: BlobStore, max_bytes: int, max_file_bytes: int) -> None:
        self._blobs = blobs
        self._max_bytes = max_bytes
        self._max_file_bytes = max_file_bytes
        self._entries: OrderedDict[tuple[str, int], tuple[VoicePromptFile, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: str, *, generation: int) -> VoicePromptFile:
        key = (path, generation)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        data = self._blobs.get(path, max_bytes=self._max_file_bytes)
        prompt = loads(data, max_bytes=self._max_file_bytes)
        with self._lock:
            if key not in self._entries and len(data) <= self._max_bytes:
                self._entries[key] = (prompt, len(data))
                self._bytes += len(data)
                while self._bytes > self._max_bytes:
                    _, (_, size) = self._entries.popitem(last=False)
                    self._bytes -= size
        return prompt

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return self._bytes
