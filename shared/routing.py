"""Routing v0: the highest-priority configured backend that offers the job's mode.

Backends come from settings; nothing here is specific to one backend. Health and live
capabilities join the decision when the backend registry lands.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.backends import BackendConfig
from shared.errors import NoBackendAvailable


def choose_backend(backends: Sequence[BackendConfig], *, mode: str) -> BackendConfig:
    able = [b for b in backends if mode in b.modes]
    if not able:
        raise NoBackendAvailable(
            f"no configured backend can run mode {mode!r}",
            details={"mode": mode, "backends": [b.id for b in backends]},
        )
    return min(able, key=lambda b: (b.priority, b.id))
