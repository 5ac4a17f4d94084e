"""The composition root of a worker process: settings, clients and the model, built once."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import google.cloud.pubsub_v1 as pubsub_v1

from gpu_worker.bucket_io import BucketIO
from gpu_worker.cloud_logs import send_to_cloud_logging
from gpu_worker.engine import CODEC_FRAME_RATE_HZ, Engine, token_budget
from gpu_worker.heartbeat import Heartbeat
from gpu_worker.pipeline import StageConfig
from gpu_worker.prompt_cache import PromptCache
from gpu_worker.runner import Executor, JobRunner, RunnerConfig
from gpu_worker.subscriber import HomeSubscriber
from gpu_worker.synthesizer import ModelSet, Synthesizer
from gpu_worker.tasks import TaskExecutor
from gpu_worker.verify.checker import Listeners, Verifier
from shared.adapters import tracing
from shared.bootstrap import build_gateway
from shared.domain.backends import BackendKind
from shared.domain.errors import ConfigurationError
from shared.domain.modes import ModelType
from shared.settings import EngineKind, Settings, WithoutCuda, WorkerSettings
from shared.usecases.gateway import Gateway

log = logging.getLogger(__name__)

PROMPT_FRAME_TOKENS = 16
"""Tokens of every prefill besides the voice prompt and the text: the role, codec, language and
speaker markers around them (about a dozen in qwen-tts 0.1.1's layout), rounded up."""
REFERENCE_TEXT_TOKENS_PER_S = 5.0
"""A reference's transcript, in tokens per second of its audio: generous for Chinese (four or
five characters a second, about a token each) and more so for alphabetic text."""


@dataclass(frozen=True, kw_only=True)
class Worker:
    gateway: Gateway
    runner: JobRunner
    heartbeat: Heartbeat
    subscriber: HomeSubscriber


def load_models(settings: Settings) -> ModelSet:
    """Every configured model, loaded and warmed up before the first job; first, the
    settings' lengths checked against each other (``check_lengths``)."""
    check_lengths(settings)
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


def load_verifier(settings: Settings, models: ModelSet) -> Verifier:
    """What checks this worker's audio: the signal checks always; the configured ASR model and
    forced aligner, loaded once here; the Base model's speaker encoder where one is loaded."""
    v = settings.worker.verify
    device = models.device
    transcriber = aligner = None
    if v.asr_model or v.aligner_model:
        from gpu_worker.verify.listening import Aligner, Transcriber

        transcriber = Transcriber.load(v.asr_model, device=device) if v.asr_model else None
        aligner = Aligner.load(v.aligner_model, device=device) if v.aligner_model else None
    listeners = Listeners(
        transcriber=transcriber, aligner=aligner, encoder=models.get(ModelType.BASE)
    )
    return Verifier(settings=v, listeners=listeners)


def check_lengths(settings: Settings) -> None:
    """Refuse to start on lengths that do not fit together, naming the setting to change: a
    voice made from the longest reference allowed must fit ``max_prompt_tokens``; on the
    ``faster`` engine, such a prompt, the longest chunk and that chunk's token budget must fit
    its static cache (``max_seq_len``), else every such line would fail with
    ``prompt_too_long``."""
    w = settings.worker
    seconds = settings.voices.max_reference_s
    frames = math.ceil(seconds * CODEC_FRAME_RATE_HZ)  # as many as the reference makes
    transcript = math.ceil(seconds * REFERENCE_TEXT_TOKENS_PER_S)
    if frames + transcript > w.max_prompt_tokens:
        per_s = CODEC_FRAME_RATE_HZ + REFERENCE_TEXT_TOKENS_PER_S
        longest = math.floor((w.max_prompt_tokens - 2) / per_s * 10) / 10
        raise ConfigurationError(
            f"TTS_WORKER__MAX_PROMPT_TOKENS={w.max_prompt_tokens} is shorter than a voice made "
            f"from the longest reference allowed (TTS_VOICES__MAX_REFERENCE_S={seconds:g}: "
            f"{frames} frames and about {transcript} tokens of transcript): raise "
            f"TTS_WORKER__MAX_PROMPT_TOKENS to at least {frames + transcript}, or lower "
            f"TTS_VOICES__MAX_REFERENCE_S to at most {longest:g}"
        )
    if w.engine not in (EngineKind.FASTER, EngineKind.BATCHED):
        return
    budget = token_budget("x" * w.max_chunk_chars, cap=w.max_new_tokens)
    # A chunk's text is at most a token a character; the decode loop stops at max_seq_len - 1.
    need = PROMPT_FRAME_TOKENS + w.max_prompt_tokens + w.max_chunk_chars + budget + 1
    if need > w.max_seq_len:
        raise ConfigurationError(
            f"TTS_WORKER__MAX_SEQ_LEN={w.max_seq_len} cannot hold the longest line this worker "
            f"may be given: a voice prompt of up to {w.max_prompt_tokens} tokens "
            f"(TTS_WORKER__MAX_PROMPT_TOKENS), a chunk of up to {w.max_chunk_chars} characters "
            f"(TTS_WORKER__MAX_CHUNK_CHARS, a token each at most) with its budget of {budget} "
            f"new tokens, and {PROMPT_FRAME_TOKENS + 1} more of the prompt's frame need {need}: "
            f"raise TTS_WORKER__MAX_SEQ_LEN to at least {need}, or lower "
            "TTS_WORKER__MAX_CHUNK_CHARS, or TTS_WORKER__MAX_PROMPT_TOKENS together with "
            "TTS_VOICES__MAX_REFERENCE_S"
        )


def build_engine(w: WorkerSettings, *, source: str) -> Engine:
    """The engine ``TTS_WORKER__ENGINE`` names; for ``faster`` without CUDA, what
    ``TTS_WORKER__WITHOUT_CUDA`` says (fail, the baseline, or eager graphs)."""
    # Imported here: each pulls torch and its model library, which only a worker needs.
    from gpu_worker.qwen_engine import QwenEngine, resolve_device

    if w.engine is EngineKind.QWEN:
        return QwenEngine(
            model_source=source,
            max_prompt_tokens=w.max_prompt_tokens,
            device=w.device,
            dtype=w.dtype,
            stream_frames=w.stream_frames,
        )

    import torch

    from gpu_worker.fast_engine import FastEngine

    has_cuda = resolve_device(w.device).startswith("cuda") and torch.cuda.is_available()
    if not has_cuda and w.without_cuda is WithoutCuda.BASELINE:
        log.warning(
            "TTS_WORKER__ENGINE=faster needs CUDA, which this worker lacks: "
            "running the qwen-tts baseline (TTS_WORKER__WITHOUT_CUDA=baseline)"
        )
        return QwenEngine(
            model_source=source,
            max_prompt_tokens=w.max_prompt_tokens,
            device=w.device,
            dtype=w.dtype,
            stream_frames=w.stream_frames,
        )
    eager = not has_cuda and w.without_cuda is WithoutCuda.EAGER
    if w.engine is EngineKind.BATCHED:
        from gpu_worker.batched_engine import BatchedEngine

        return BatchedEngine(
            model_source=source,
            max_prompt_tokens=w.max_prompt_tokens,
            device=w.device,
            dtype=w.dtype,
            stream_frames=w.stream_frames,
            max_seq_len=w.max_seq_len,
            batch_size=w.batch_size,
            eager=eager,
        )
    return FastEngine(
        model_source=source,
        max_prompt_tokens=w.max_prompt_tokens,
        device=w.device,
        dtype=w.dtype,
        stream_frames=w.stream_frames,
        max_seq_len=w.max_seq_len,
        eager=eager,
    )


def bootstrap(
    settings: Settings | None = None,
    *,
    gateway: Gateway | None = None,
    models: ModelSet | None = None,
    subscriber_client: pubsub_v1.SubscriberClient | None = None,
    executor: Executor | None = None,
    verifier: Verifier | None = None,
) -> Worker:
    """The 4090 worker. ``executor`` replaces what runs each task (benchmarks, tests); by
    default the models run it through the bucket."""
    settings = settings or Settings()
    w = settings.worker
    backend = settings.backend(w.backend_id)
    if backend is None:
        raise ConfigurationError(f"worker backend {w.backend_id!r} is not declared in TTS_BACKENDS")
    tracing.configure(settings, service=f"tts-worker-{w.backend_id}")
    if w.cloud_logging:
        send_to_cloud_logging(settings.project_id, log_name="tts-home-worker", node_id=w.worker_id)
    # Whatever gateway it is given, the worker runs without a webhook sender: it sits on the
    # home network, where a caller's URL must never reach; its jobs' deliveries stay due on
    # them, and the monitor (in the cloud) sends them.
    gw = replace(gateway or build_gateway(settings), webhooks=None)
    models = models or load_models(settings)
    verifier = verifier or load_verifier(settings, models)
    prompts = PromptCache(
        max_bytes=w.prompt_cache_bytes,
        max_file_bytes=settings.voices.max_prompt_bytes,
    )
    executor = executor or TaskExecutor(
        models=models,
        io=BucketIO(gateway=gw, prompts=prompts),
        limits=settings.voices,
        max_chunk_chars=w.max_chunk_chars,
        first_chunk_chars=w.first_chunk_chars,
        max_join_s=w.max_join_s,
        stream=StageConfig.of(w),
        verifier=verifier,
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
        engine=models.engine,
        checks=verifier.checks,
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
