"""The worker's heartbeat into ``backends/{id}``: capabilities (with what each loaded model
accepts in a voice prompt), API version, load, GPU, and a fault that made it unhealthy."""

from __future__ import annotations

import logging
import threading

import torch

from shared.domain.backends import (
    API_VERSION,
    BackendHeartbeat,
    BackendKind,
    BackendStatus,
    Capabilities,
    EngineInfo,
    GpuTelemetry,
    ModelFacts,
)
from shared.domain.errors import TransientError
from shared.domain.modes import Mode
from shared.domain.verification import Check
from shared.usecases.ports import BackendStore, Clock

log = logging.getLogger(__name__)


def gpu_telemetry(device: str) -> GpuTelemetry:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return GpuTelemetry(device=device)
    index = torch.device(device).index or 0
    return GpuTelemetry(
        device=torch.cuda.get_device_name(index),
        memory_allocated_bytes=torch.cuda.memory_allocated(index),
        memory_total_bytes=torch.cuda.get_device_properties(index).total_memory,
    )


class Heartbeat:
    def __init__(
        self,
        *,
        store: BackendStore,
        backend_id: str,
        kind: BackendKind,
        worker_id: str,
        modes: tuple[Mode, ...],
        models: tuple[str, ...],
        device: str,
        clock: Clock,
        interval_s: float,
        model_facts: tuple[ModelFacts, ...] = (),
        engine: EngineInfo | None = None,
        checks: tuple[Check, ...] = (),
    ) -> None:
        self._store = store
        self._backend_id = backend_id
        self._kind = kind
        self._worker_id = worker_id
        self._capabilities = Capabilities(
            api_version=API_VERSION,
            modes=modes,
            models=models,
            model_facts=model_facts,
            engine=engine,
            checks=checks,
        )
        self._device = device
        self._clock = clock
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self.jobs_in_hand = 0
        self.jobs_done = 0
        self._fault: str | None = None

    @property
    def fault(self) -> str | None:
        return self._fault

    def unhealthy(self, fault: str) -> None:
        """From now on every beat says ``unhealthy``, with why (a CUDA fault): this one at
        once, so that routing turns away before the process has stopped."""
        with self._lock:
            self._fault = fault
        try:
            self.beat()
        except TransientError as exc:
            log.warning("heartbeat failed", extra={"error": exc.message})

    def job_started(self) -> None:
        with self._lock:
            self.jobs_in_hand += 1

    def job_ended(self) -> None:
        with self._lock:
            self.jobs_in_hand -= 1
            self.jobs_done += 1

    def beat(self, status: BackendStatus = BackendStatus.ONLINE) -> None:
        """Say ``status``; once the worker is unhealthy, always that (and no CUDA query: its
        context is broken)."""
        with self._lock:
            in_hand, done, fault = self.jobs_in_hand, self.jobs_done, self._fault
        if fault is not None:
            status = BackendStatus.UNHEALTHY
        self._store.heartbeat(
            BackendHeartbeat(
                id=self._backend_id,
                kind=self._kind,
                worker_id=self._worker_id,
                status=status,
                capabilities=self._capabilities,
                last_heartbeat=self._clock(),
                jobs_in_hand=in_hand,
                jobs_done=done,
                gpu=GpuTelemetry(device=self._device)
                if fault is not None
                else gpu_telemetry(self._device),
                fault=fault,
            )
        )

    def run(self, stop: threading.Event) -> None:
        """Beat every interval until ``stop`` is set. A failed beat is logged, not fatal."""
        while True:
            try:
                self.beat()
            except TransientError as exc:
                log.warning("heartbeat failed", extra={"error": exc.message})
            if stop.wait(self._interval_s):
                return
