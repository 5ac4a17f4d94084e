"""The operator's view, admin scope only (it shows every backend and job count): backends as
configured and as last seen, queue depths, and recent health events. Admin scope only."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from shared.domain.backends import BackendConfig, BackendHeartbeat, HealthEvent
from shared.domain.jobs import JobState
from shared.domain.keys import Principal, Scope
from shared.usecases.gateway import Gateway

RECENT_EVENTS = 50


class BackendDebug(BaseModel):
    model_config = ConfigDict(frozen=True)

    config: BackendConfig
    last_seen: BackendHeartbeat | None
    queued: int
    running: int


class DebugView(BaseModel):
    model_config = ConfigDict(frozen=True)

    backends: tuple[BackendDebug, ...]
    events: tuple[HealthEvent, ...]


def debug_view(gw: Gateway, *, principal: Principal) -> DebugView:
    principal.require(Scope.ADMIN)
    backends = tuple(
        BackendDebug(
            config=b,
            last_seen=gw.backends.get(b.id),
            queued=gw.jobs.count(state=JobState.QUEUED, backend=b.id),
            running=gw.jobs.count(state=JobState.RUNNING, backend=b.id),
        )
        for b in gw.settings.backends
    )
    return DebugView(backends=backends, events=tuple(gw.events.recent(limit=RECENT_EVENTS)))
