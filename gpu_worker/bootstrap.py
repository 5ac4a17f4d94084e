"""The composition root of a worker process: settings, clients and the model, built once."""

from __future__ import annotations

from dataclasses import dataclass

import google.cloud.pubsub_v1 as pubsub_v1

from gpu_worker.engine import QwenEngine
from gpu_worker.heartbeat import Heartbeat
from gpu_worker.runner import JobRunner, RunnerConfig
from gpu_worker.subscriber import HomeSubscriber
from shared.backends import BackendKind
from shared.bootstrap import build_gateway
from shared.errors import ConfigurationError
from shared.ports import Synthesizer
from shared.service import Gateway
from shared.settings import Settings


@dataclass(frozen=True, kw_only=True)
class Worker:
    gateway: Gateway
    runner: JobRunner
    heartbeat: Heartbeat
    subscriber: HomeSubscriber


def load_engine(settings: Settings) -> QwenEngine:
    w = settings.worker
    engine = QwenEngine(
        model_source=w.model, device=w.device, dtype=w.dtype, max_new_tokens=w.max_new_tokens
    )
    engine.load()
    return engine


def bootstrap(
    settings: Settings | None = None,
    *,
    gateway: Gateway | None = None,
    engine: QwenEngine | None = None,
    subscriber_client: pubsub_v1.SubscriberClient | None = None,
) -> Worker:
    settings = settings or Settings()
    w = settings.worker
    backend = settings.backend(w.backend_id)
    if backend is None:
        raise ConfigurationError(f"worker backend {w.backend_id!r} is not declared in TTS_BACKENDS")
    gw = gateway or build_gateway(settings)
    engine = engine or load_engine(settings)
    synthesizer: Synthesizer = engine
    runner = JobRunner(
        jobs=gw.jobs,
        blobs=gw.blobs,
        synthesizer=synthesizer,
        clock=gw.clock,
        config=RunnerConfig(
            worker_id=w.worker_id,
            backend_id=backend.id,
            lease_s=w.lease_s,
            max_attempts=w.max_attempts,
        ),
        audio_prefix=settings.audio_prefix,
    )
    heartbeat = Heartbeat(
        store=gw.backends,
        backend_id=backend.id,
        kind=BackendKind(backend.kind),
        worker_id=w.worker_id,
        modes=engine.modes,
        models=(w.model,),
        device=engine.device,
        clock=gw.clock,
        interval_s=w.heartbeat_s,
    )
    client = subscriber_client or pubsub_v1.SubscriberClient()
    subscriber = HomeSubscriber(
        client=client,
        subscription_path=client.subscription_path(settings.project_id, w.subscription),
        runner=runner,
        heartbeat=heartbeat,
        max_lease_s=w.shutdown_grace_s + w.lease_s,
        shutdown_grace_s=w.shutdown_grace_s,
    )
    return Worker(gateway=gw, runner=runner, heartbeat=heartbeat, subscriber=subscriber)
