"""Routing: the highest-priority configured backend that can run the job's mode.

Settings declare which backends exist and what each may offer; a backend's last heartbeat
says what it actually loaded, and narrows that. A backend that has never reported is trusted
on its configuration, so jobs queue for a worker that has not started yet. A backend that
speaks another API version is never chosen. Health-based failover joins with the registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shared import API_VERSION
from shared.backends import BackendConfig, BackendHeartbeat
from shared.errors import NoBackendAvailable


def choose_backend(
    backends: Sequence[BackendConfig],
    *,
    mode: str,
    seen: Mapping[str, BackendHeartbeat | None] | None = None,
) -> BackendConfig:
    seen = seen or {}
    offers: dict[str, tuple[str, ...]] = {}
    for backend in backends:
        beat = seen.get(backend.id)
        if beat is None:
            offers[backend.id] = backend.modes
        elif beat.capabilities.api_version != API_VERSION:
            offers[backend.id] = ()
        else:
            offers[backend.id] = tuple(m for m in backend.modes if m in beat.capabilities.modes)
    able = [b for b in backends if mode in offers[b.id]]
    if not able:
        raise NoBackendAvailable(
            f"no backend can run mode {mode!r} now",
            details={"mode": mode, "offered": {k: list(v) for k, v in offers.items()}},
        )
    return min(able, key=lambda b: (b.priority, b.id))
