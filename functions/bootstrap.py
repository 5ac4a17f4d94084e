"""The composition root of a functions process: settings read once, clients built once."""

from __future__ import annotations

from shared.bootstrap import build_gateway
from shared.service import Gateway
from shared.settings import Settings


def bootstrap(settings: Settings | None = None) -> Gateway:
    return build_gateway(settings or Settings())
