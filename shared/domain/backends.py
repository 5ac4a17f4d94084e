"""Backends: the GPU workers a job can be routed to, as configured and as last seen."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.modes import WORKER_MODES, Mode

API_VERSION = 1
"""The job-message / worker API version. Workers advertise it; the router only picks matches.

A worker that adds a mode or changes a message bumps it, so an older gateway never routes to it.
"""


class BackendKind(StrEnum):
    HOME_GPU = "home_gpu"
    RUNPOD = "runpod"


class BackendConfig(BaseModel):
    """A backend the deployment declares (settings). Routing never invents one."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    kind: BackendKind
    priority: int = 100
    """Lower runs first."""
    modes: tuple[Mode, ...] = WORKER_MODES
    """What this backend may run; its heartbeat narrows it to what its models allow."""
    max_queue: int | None = Field(default=None, ge=0)
    """Spill-over: while more jobs than this wait for it, new jobs go to the next backend."""


class BackendStatus(StrEnum):
    ONLINE = "online"
    DRAINING = "draining"
    OFFLINE = "offline"
    UNHEALTHY = "unhealthy"
    """The worker met a fault of its own (a broken CUDA context) and is exiting, for its
    supervisor to start a fresh one; routing treats it as down until that one beats."""


DOWN = frozenset({BackendStatus.OFFLINE, BackendStatus.UNHEALTHY})
"""The statuses that take a backend out of routing's first choice."""


class ModelFacts(BaseModel):
    """What a loaded model accepts in a voice prompt, read from its own config: a prompt's
    codes index its codebook embeddings (on a GPU an index past them is a device-side assert,
    which breaks the process), and its speaker embedding joins the model's own embeddings."""

    model_config = ConfigDict(frozen=True)

    model: str
    """The model as in ``Capabilities.models``."""
    model_type: str
    codebook_size: int = Field(gt=0)
    """A code must be below it (2048 on the released models)."""
    num_code_groups: int = Field(gt=0)
    """A prompt's codes have one column per group (16 on the released models)."""
    speaker_embedding_dim: int | None = Field(default=None, gt=0)
    """The size of a prompt's speaker embedding; ``None``: no speaker encoder (not a Base
    model), so it speaks no prompt."""


class EngineInfo(BaseModel):
    """Which implementation runs a worker's models, as the worker built it (a ``faster`` worker
    without CUDA may run ``qwen``), and its library's installed version."""

    model_config = ConfigDict(frozen=True)

    name: str
    """As ``TTS_WORKER__ENGINE`` spells it (``qwen``, ``faster``); a plain string, so a newer
    worker's heartbeat still parses."""
    library: str | None = None
    """The package that implements it (``qwen-tts``, ``faster-qwen3-tts``)."""
    version: str | None = None
    """That package's version as installed; ``None``: not installed as a package."""


class Capabilities(BaseModel):
    model_config = ConfigDict(frozen=True)

    api_version: int
    modes: tuple[str, ...]
    """As the worker reported them: plain strings, so a newer worker's heartbeat still parses
    (its API version keeps the router away from it)."""
    models: tuple[str, ...]
    model_facts: tuple[ModelFacts, ...] = ()
    """Per loaded model, what its voice prompts must fit (the registry checks files against
    them); empty from a worker that predates them."""
    engine: EngineInfo | None = None
    """The implementation running ``models`` and its version; ``None`` from a worker that
    predates it (or that loaded no model)."""
    checks: tuple[str, ...] = ()
    """The checks it runs on a job that asks for them (``verification.Check`` values, plain
    strings so a newer worker's heartbeat still parses); routing prefers a backend that runs
    them all for such a job."""


class GpuTelemetry(BaseModel):
    model_config = ConfigDict(frozen=True)

    device: str
    memory_allocated_bytes: int = 0
    memory_total_bytes: int = 0


class BackendHeartbeat(BaseModel):
    """``backends/{id}``: what a worker last said about itself."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: BackendKind
    worker_id: str
    status: BackendStatus
    capabilities: Capabilities
    last_heartbeat: datetime
    jobs_in_hand: int = 0
    jobs_done: int = 0
    queue_depth: int = 0
    """Jobs queued for this backend, as the monitor last counted them."""
    gpu: GpuTelemetry | None = None
    fault: str | None = None
    """Why an ``unhealthy`` worker stopped (the CUDA fault it met)."""


class HealthEvent(BaseModel):
    """A change in the system's health, kept for the debug view (``events/{id}``)."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    event: str
    """``online``, ``offline``, ``rerouted``, ``lease_expired``, ``republished``."""
    backend: str | None = None
    job_id: str | None = None
    detail: str = ""
    expires_at: datetime | None = None
    """When the record may be deleted (Firestore's TTL policy on this field)."""
