"""The composition root of a functions process: settings read once, clients built once."""

from __future__ import annotations

from shared.adapters import tracing
from shared.adapters.runpod_api import RunPodClient
from shared.bootstrap import build_gateway
from shared.logs import configure_logging
from shared.settings import Settings
from shared.usecases.gateway import Gateway


def bootstrap(settings: Settings | None = None) -> Gateway:
    configure_logging()
    settings = settings or Settings()
    tracing.configure(settings, service="tts-functions")
    return build_gateway(settings)


def runpod_client(settings: Settings) -> RunPodClient:
    rp = settings.runpod
    return RunPodClient(
        base_url=rp.base_url,
        endpoint_id=rp.endpoint_id,
        api_key=rp.api_key.get_secret_value(),
        timeout_s=rp.request_timeout_s,
        attempts=rp.attempts,
        budget_s=rp.call_budget_s,
    )
