"""What every benchmark starts from: the topology applied on the emulators, a gateway on them,
and an API key to call it with. Call after the emulator variables are set."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import Settings
from shared.usecases.gateway import Gateway


@dataclass(frozen=True)
class Emulated:
    settings: Settings
    gateway: Gateway
    key: str
    """A user key of owner ``bench``."""


def emulated_gateway() -> Emulated:
    import google.cloud.pubsub_v1 as pubsub_v1

    from infra import topology
    from shared.adapters.clients import storage_client
    from shared.bootstrap import build_gateway
    from shared.domain.keys import Scope, new_api_key

    settings = Settings()
    topology.apply(
        topology.load(),
        project_id=settings.project_id,
        bucket=settings.bucket,
        publisher=pubsub_v1.PublisherClient(),
        subscriber=pubsub_v1.SubscriberClient(),
        storage_client=storage_client(settings),
    )
    gw = build_gateway(settings)
    secret, record = new_api_key(owner="bench", scopes=frozenset({Scope.USER}), now=gw.clock())
    gw.keys.put(record)
    return Emulated(settings=settings, gateway=gw, key=secret)
