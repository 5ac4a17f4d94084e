"""The one RunPod serverless handler (two handlers would drift apart in what they accept).

``python -m gpu_worker.runpod_handler`` loads the configured models once, before the handler
exists (a lazy load inside the handler would race between concurrent requests), then hands RunPod a
handler that runs each task through the same ``TaskExecutor`` as the 4090, with signed-URL
I/O instead of Google clients. Every outcome is a ``RunPodOutput``; a task failure is data
(``failure``), never an exception escaping into the SDK.

Several jobs at once (``concurrent``): runpod 1.10.0 takes one job at a time unless the config's
``concurrency_modifier`` says more, and calls a plain handler inside its event loop, where one
job blocks every other. So the SDK is given an async handler that runs each job on a thread of
its own, up to ``TTS_WORKER__BATCH_SIZE`` at once; their lines meet in the models' batch queue
and are said in one engine call, as the home worker's jobs are.

A CUDA fault breaks the process's CUDA context for good. Its job is reported as a retryable
``worker_poisoned`` failure (the dispatcher does not count the attempt) with RunPod's
``refresh_worker`` flag, which has RunPod replace this worker once the result is in; the SDK's
loop is told to stop after the job, any job it still hands over meanwhile is answered the same
way without touching the GPU, and the process exits with ``EXIT_POISONED``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from pydantic import ValidationError

from gpu_worker.bootstrap import load_models, load_verifier
from gpu_worker.pipeline import StageConfig
from gpu_worker.prompt_cache import PromptCache
from gpu_worker.synthesizer import ModelSet
from gpu_worker.tasks import Task, TaskExecutor
from gpu_worker.url_io import SignedUrlIO
from gpu_worker.verify.checker import Verifier
from shared.domain.backends import API_VERSION
from shared.domain.errors import GatewayError, WorkerPoisoned
from shared.logs import configure_logging
from shared.settings import Settings
from shared.wire.runpod_io import RunPodFailure, RunPodInput, RunPodOutput

log = logging.getLogger(__name__)

Handler = Callable[[Mapping[str, Any]], dict[str, Any]]

EXIT_POISONED = 70
REFRESH = "refresh_worker"
"""RunPod's flag, in a handler's output or in the SDK's config, for a fresh worker."""


def build_handler(
    settings: Settings, *, models: ModelSet, verifier: Verifier | None = None
) -> Handler:
    """The handler, closed over models loaded once and a prompt cache shared across jobs.
    After a CUDA fault it answers every job as ``_poisoned``, without touching the GPU."""
    faults: list[WorkerPoisoned] = []
    prompts = PromptCache(
        max_bytes=settings.worker.prompt_cache_bytes,
        max_file_bytes=settings.voices.max_prompt_bytes,
    )
    session = requests.Session()
    verifier = verifier or load_verifier(settings, models)

    def handler(job: Mapping[str, Any]) -> dict[str, Any]:
        job_id = str(job.get("id", ""))
        try:
            task_input = RunPodInput.model_validate(job.get("input"))
        except ValidationError as exc:
            return _failed(job_id, "invalid_input", f"not a task: {exc.errors()[0]['msg']}")
        task = task_input.task
        if task_input.api_version != API_VERSION:
            return _failed(
                task.id,
                "api_version",
                f"this worker speaks API {API_VERSION}, the task {task_input.api_version}",
            )
        if faults:
            return _poisoned(task.id, faults[0])
        executor = TaskExecutor(
            models=models,
            io=SignedUrlIO(
                task_input,
                session=session,
                prompts=prompts,
                max_audio_bytes=settings.voices.max_audio_bytes,
                max_prompt_bytes=settings.voices.max_prompt_bytes,
            ),
            limits=settings.voices,
            max_chunk_chars=settings.worker.max_chunk_chars,
            first_chunk_chars=settings.worker.first_chunk_chars,
            max_join_s=settings.worker.max_join_s,
            stream=StageConfig.of(settings.worker),
            verifier=verifier,
        )
        try:
            result = executor.execute(
                Task(id=task.id, owner=task.owner, request=task.request, attempt=task.attempt)
            )
        except WorkerPoisoned as exc:
            log.critical("CUDA fault: this worker is replaced", extra={"job_id": task.id})
            faults.append(exc)
            return _poisoned(task.id, exc)
        except GatewayError as exc:
            log.warning("task failed", extra={"job_id": task.id, "code": exc.code})
            return _failed(task.id, exc.code, exc.message, retryable=exc.retryable)
        log.info("task done", extra={"job_id": task.id, "voice_id": result.voice_id})
        return RunPodOutput(
            job_id=task.id, audio=result.audio, voice_id=result.voice_id
        ).model_dump(mode="json")

    return handler


def _failed(job_id: str, code: str, message: str, *, retryable: bool = False) -> dict[str, Any]:
    failure = RunPodFailure(code=code, message=message, retryable=retryable)
    return RunPodOutput(job_id=job_id, failure=failure).model_dump(mode="json")


def _poisoned(job_id: str, fault: WorkerPoisoned) -> dict[str, Any]:
    # The SDK takes REFRESH out of the output and asks RunPod to stop this worker once the
    # result is in; the dispatcher reads the code and spares the attempt.
    output = _failed(job_id, fault.code, fault.message, retryable=True)
    return {**output, REFRESH: True}


def concurrent(handler: Handler, *, jobs: int) -> dict[str, Any]:
    """The SDK's config for ``handler``, ``jobs`` of them at once: its ``concurrency_modifier``
    asks for that many, and its handler awaits each job on a thread of its own (a plain
    handler would run inside the SDK's event loop, one job blocking the rest)."""
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="runpod-job")

    async def serve_job(job: Mapping[str, Any]) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(pool, handler, job)

    def concurrency(_current: int) -> int:
        return jobs

    return {"handler": serve_job, "concurrency_modifier": concurrency}


def main() -> int:
    import runpod  # the SDK only where it runs: importing it pulls a web stack

    configure_logging()
    settings = Settings()
    handler = build_handler(settings, models=load_models(settings))
    config: dict[str, Any] = {}
    poisoned = threading.Event()

    def serve(job: Mapping[str, Any]) -> dict[str, Any]:
        output = handler(job)
        if output.get(REFRESH):
            # The SDK reads its own refresh_worker setting after each job, then ends its loop.
            poisoned.set()
            config[REFRESH] = True
        return output

    config.update(concurrent(serve, jobs=settings.worker.batch_size))
    log.info(
        "runpod worker ready",
        extra={"models": list(settings.worker.models), "jobs_at_once": settings.worker.batch_size},
    )
    runpod.serverless.start(config)
    return EXIT_POISONED if poisoned.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
