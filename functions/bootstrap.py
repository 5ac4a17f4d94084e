"""The composition root of a functions process: settings read once, clients built once."""

from __future__ import annotations

from shared.bootstrap import build_gateway
from shared.logs import configure_logging
from shared.service import Gateway
from shared.settings import Settings


def bootstrap(settings: Settings | None = None) -> Gateway:
    configure_logging()
    return build_gateway(settings or Settings())
