"""One call's view of the gateway: each voice record read at most once while it is served.

A speech call that names a registered voice reads its record up to three times: to learn
which mode it asks for, to resolve the request's voice, and for the cache key (the prompt's
generation). Voice records are not cached across calls (a prompt overwritten or a voice
deactivated must count from the next call on: a stale generation would serve the old prompt's
audio from the cache), but within one call they are read once: the call then also sees one
version of the voice throughout, where three reads could straddle an overwrite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from shared.domain.voices import Voice
from shared.usecases.gateway import Gateway
from shared.usecases.ports import VoiceStore


def per_call(gw: Gateway) -> Gateway:
    """``gw`` with its voice reads remembered for as long as the returned gateway is used
    (one call: never keep it)."""
    if isinstance(gw.voices, _VoicesReadOnce):
        return gw
    return dataclasses.replace(gw, voices=_VoicesReadOnce(gw.voices))


_Filters = tuple[str | None, str | None, str | None, str | None, int]


class _VoicesReadOnce:
    def __init__(self, inner: VoiceStore) -> None:
        self._inner = inner
        self._by_id: dict[str, Voice | None] = {}
        self._queries: dict[_Filters, list[Voice]] = {}

    def get(self, voice_id: str) -> Voice | None:
        if voice_id not in self._by_id:
            self._by_id[voice_id] = self._inner.get(voice_id)
        return self._by_id[voice_id]

    def query(
        self,
        *,
        name: str | None = None,
        character: str | None = None,
        emotion: str | None = None,
        tag: str | None = None,
        limit: int,
    ) -> list[Voice]:
        filters = (name, character, emotion, tag, limit)
        if filters not in self._queries:
            found = self._inner.query(
                name=name, character=character, emotion=emotion, tag=tag, limit=limit
            )
            self._queries[filters] = found
            # A voice found by name is the record a read by its id would give in this call.
            for voice in found:
                self._by_id.setdefault(voice.id, voice)
        return list(self._queries[filters])

    def update(self, voice_id: str, change: Callable[[Voice | None], Voice | None]) -> Voice | None:
        self._forget()
        return self._inner.update(voice_id, change)

    def delete(self, voice_id: str) -> None:
        self._forget()
        self._inner.delete(voice_id)

    def _forget(self) -> None:
        # A call that writes voices reads them afresh afterwards.
        self._by_id.clear()
        self._queries.clear()
