"""The composition root of a worker process: settings, clients and the model, built once."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import google.cloud.pubsub_v1 as pubsub_v1

from gpu_worker.bucket_io import BucketIO
from gpu_worker.engine import Engine
from gpu_worker.heartbeat import Heartbeat
from gpu_worker.prompt_cache import PromptCache
from gpu_worker.runner import Executor, JobRunner, RunnerConfig
from gpu_worker.subscriber import HomeSubscriber
from gpu_worker.synthesizer import ModelSet, Synthesizer
from gpu_worker.tasks import TaskExecutor
from shared.bootstrap import build_gateway
from shared.domain.backends import BackendKind
from shared.domain.errors import ConfigurationError
from shared.settings import EngineKind, Settings, WithoutCuda, WorkerSettings
from shared.usecases.gateway import Gateway

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Worker:
    gateway: Gateway
    runner: JobRunner
    heartbeat: Heartbeat
    subscriber: HomeSubscriber


def load_models(settings: Settings) -> ModelSet:
    """Every configured model, loaded and warmed up before the first job."""
    w = settings.worker
    synthesizers = []
    for source in w.models:
        synth = Synthesizer(
            engine=build_engine(w, source=source),
            max_new_tokens=w.max_new_tokens,
            batch_size=w.batch_size,
            batch_window_s=w.batch_window_s,
        )
        synth.load()
        synthesizers.append(synth)
    return ModelSet(synthesizers)


def build_engine(w: WorkerSettings, *, source: str) -> Engine:
    """The engine ``TTS_WORKER__ENGINE`` names; for ``faster`` without CUDA, what
    ``TTS_WORKER__WITHOUT_CUDA`` says (fail, the baseline, or eager graphs)."""
    # Imported here: each pulls torch and its model library, which only a worker needs.
    from gpu_worker.qwen_engine import QwenEngine, resolve_device

    if w.engine is EngineKind.QWEN:
        return QwenEngine(model_source=source, device=w.device, dtype=w.dtype)

    import torch

    from gpu_worker.fast_engine import FastEngine

    has_cuda = resolve_device(w.device).startswith("cuda") and torch.cuda.is_available()
    if not has_cuda and w.without_cuda is WithoutCuda.BASELINE:
        log.warning(
            "TTS_WORKER__ENGINE=faster needs CUDA, which this worker lacks: "
            "running the qwen-tts baseline (TTS_WORKER__WITHOUT_CUDA=baseline)"
        )
        return QwenEngine(model_source=source, device=w.device, dtype=w.dtype)
    return FastEngine(
        model_source=source,
        device=w.device,
        dtype=w.dtype,
        stream_frames=w.stream_frames,
        max_seq_len=w.max_seq_len,
        eager=not has_cuda and w.without_cuda is WithoutCuda.EAGER,
    )


def bootstrap(
    settings: Settings | None = None,
    *,
    gateway: Gateway | None = None,
    models: ModelSet | None = None,
    subscriber_client: pubsub_v1.SubscriberClient | None = None,
    executor: Executor | None = None,
) -> Worker:
    """The 4090 worker. ``executor`` replaces what runs each task (benchmarks, tests); by
    default the models run it through the bucket."""
    settings = settings or Settings()
    w = settings.worker
    backend = settings.backend(w.backend_id)
    if backend is None:
        raise ConfigurationError(f"worker backend {w.backend_id!r} is not declared in TTS_BACKENDS")
    # Whatever gateway it is given, the worker runs without a webhook sender: it sits on the
    # home network, where a caller's URL must never reach; its jobs' deliveries stay due on
    # them, and the monitor (in the cloud) sends them.
    gw = replace(gateway or build_gateway(settings), webhooks=None)
    models = models or load_models(settings)
    prompts = PromptCache(
        max_bytes=w.prompt_cache_bytes,
        max_file_bytes=settings.voices.max_prompt_bytes,
    )
    executor = executor or TaskExecutor(
        models=models,
        io=BucketIO(gateway=gw, prompts=prompts),
        limits=settings.voices,
        max_chunk_chars=w.max_chunk_chars,
        max_join_s=w.max_join_s,
    )
    runner = JobRunner(
        gateway=gw,
        executor=executor,
        config=RunnerConfig(
            worker_id=w.worker_id,
            backend_id=backend.id,
            lease_s=w.lease_s,
            max_attempts=w.max_attempts,
        ),
    )
    heartbeat = Heartbeat(
        store=gw.backends,
        backend_id=backend.id,
        kind=BackendKind(backend.kind),
        worker_id=w.worker_id,
        modes=models.modes,
        models=models.sources,
        model_facts=models.facts,
        device=models.device,
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
        max_jobs=w.batch_size,
    )
    return Worker(gateway=gw, runner=runner, heartbeat=heartbeat, subscriber=subscriber)
