"""What a home worker says of itself, for tests that need a backend to have spoken."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.domain.backends import (
    API_VERSION,
    BackendHeartbeat,
    BackendKind,
    BackendStatus,
    Capabilities,
)
from shared.domain.modes import Mode

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def heartbeat(
    *,
    backend_id: str = "home-4090",
    modes: tuple[Mode | str, ...] = (Mode.CUSTOM_VOICE,),
    models: tuple[str, ...] = ("m",),
    at: datetime = EPOCH,
    api_version: int = API_VERSION,
    checks: tuple[str, ...] = (),
) -> BackendHeartbeat:
    """An online home GPU offering ``modes`` with ``models`` loaded, heard at ``at``."""
    return BackendHeartbeat(
        id=backend_id,
        kind=BackendKind.HOME_GPU,
        worker_id="w1",
        status=BackendStatus.ONLINE,
        capabilities=Capabilities(
            api_version=api_version,
            modes=tuple(Mode(m) for m in modes),
            models=models,
            checks=checks,
        ),
        last_heartbeat=at,
    )
