"""A RunPod worker takes several jobs at once and batches them, as the home worker does; and
the heartbeat names the engine, its version and the models.

The RunPod test runs the worker's ``main()`` under runpod 1.10.0's own job scaler
(``JobScaler``, which the SDK's ``serverless.start`` runs on RunPod), with a local job source in
place of RunPod's job-take API: the scaler asks for as many jobs as the config allows, and runs
each through the handler the worker gave it."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from runpod.serverless.modules.rp_job import run_job
from runpod.serverless.modules.rp_scale import JobScaler
from runpod.serverless.modules.worker_state import JobsProgress

from gpu_worker import runpod_handler
from gpu_worker.audio.encoding import EncodedAudio, Waveform
from gpu_worker.bootstrap import bootstrap
from gpu_worker.engine import Line, engine_info
from gpu_worker.synthesizer import ModelSet, Synthesizer
from gpu_worker.tasks import Task
from gpu_worker.url_io import SignedUrlIO
from shared.domain.backends import BackendKind, EngineInfo, ModelFacts
from shared.domain.jobs import AudioResult
from shared.domain.modes import ModelType
from shared.domain.synthesis import CustomVoiceRequest
from shared.domain.voice_file import PromptItem
from shared.settings import Settings
from shared.wire.runpod_io import RunPodInput, RunPodTask, SignedUrls
from tests.support.contracts import validate_schema
from tests.support.firestore import as_json
from tests.support.gateway import Fakes, fake_gateway

RATE = 24_000
FRAME = 1920
JOBS = 4  # the default TTS_WORKER__BATCH_SIZE


class Engine:
    """A custom-voice model that says every line as 5 frames; records each call's lines."""

    model_source = "fake-custom-voice"
    device = "cpu"
    model_type = ModelType.CUSTOM_VOICE
    facts = ModelFacts(
        model="fake-custom-voice",
        model_type=ModelType.CUSTOM_VOICE,
        codebook_size=2048,
        num_code_groups=16,
    )

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    def load(self) -> None: ...

    def check_fits(self, line: Line, *, max_new_tokens: int) -> None: ...

    def synthesize(self, lines: Sequence[Line], *, max_new_tokens: int) -> list[Waveform]:
        with self._lock:
            self.calls.append(sorted(line.text for line in lines))
        wave = Waveform(samples=np.full(5 * FRAME, 0.1, np.float32), sample_rate=RATE)
        return [wave] * len(lines)

    def stream(self, line: Line, *, max_new_tokens: int) -> Iterator[Waveform]:
        yield from self.synthesize([line], max_new_tokens=max_new_tokens)

    def create_voice_prompt(
        self, *, reference: Waveform, ref_text: str | None, x_vector_only: bool
    ) -> tuple[PromptItem, ...]:
        return ()


def runpod_job(index: int) -> dict[str, Any]:
    request = CustomVoiceRequest(text=f"Hello {index}.", speaker="ryan")
    task = RunPodTask(id=f"job{index}", owner="alice", request=request, attempt=1)
    payload = RunPodInput(task=task, urls=SignedUrls()).model_dump(mode="json")
    return {"id": f"rp-{index}", "input": payload}


def stored(_io: SignedUrlIO, task: Task, audio: EncodedAudio, *, parts: int) -> AudioResult:
    """Where the signed audio URL's upload would be: its result, nothing sent."""
    return AudioResult(
        uri=f"gs://test-bucket/audio/{task.id}.wav",
        format=audio.format,
        content_type=audio.content_type,
        sample_rate=audio.sample_rate,
        duration_s=audio.duration_s,
        bytes=len(audio.data),
        parts=parts,
    )


def test_a_runpod_worker_takes_several_jobs_at_once_and_says_them_in_one_batch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    engine = Engine()
    # A long window: one batch only if the jobs run at the same time.
    models = ModelSet(
        [Synthesizer(engine=engine, max_new_tokens=2048, batch_size=JOBS, batch_window_s=1.0)]
    )
    asked: list[int] = []
    outputs: list[dict[str, Any]] = []

    def start(config: dict[str, Any]) -> None:
        """runpod.serverless.start on RunPod: the SDK's job scaler, fed jobs locally."""
        waiting = [runpod_job(i) for i in range(JOBS)]

        async def take(_session: object, wanted: int) -> list[dict[str, Any]] | None:
            asked.append(wanted)
            if not waiting:
                await asyncio.sleep(0.05)
                return None
            taken = waiting[:wanted]
            del waiting[:wanted]
            return taken

        async def handle(_session: object, config: dict[str, Any], job: dict[str, Any]) -> None:
            outputs.append(await run_job(config["handler"], job))
            if len(outputs) == JOBS:
                scaler.kill_worker()

        async def no_stops(_session: object) -> list[str]:
            await asyncio.sleep(0.05)
            return []

        config.update(jobs_fetcher=take, jobs_handler=handle, stop_signals_fetcher=no_stops)
        scaler = JobScaler(config)
        asyncio.run(asyncio.wait_for(scaler.run(), timeout=60))

    monkeypatch.delenv("RUNPOD_WEBHOOK_GET_JOB", raising=False)  # the SDK's local mode
    monkeypatch.setattr(JobsProgress, "_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(JobsProgress, "_STATE_FILE", str(tmp_path / "jobs.pkl"))
    monkeypatch.setitem(
        sys.modules, "runpod", SimpleNamespace(serverless=SimpleNamespace(start=start))
    )
    monkeypatch.setattr(runpod_handler, "load_models", lambda _settings: models)
    monkeypatch.setattr(runpod_handler, "configure_logging", lambda: None)
    monkeypatch.setattr(SignedUrlIO, "store_audio", stored)
    runpod_handler.main()

    assert asked[0] == JOBS  # the SDK asked RunPod for that many jobs at once
    assert engine.calls == [[f"Hello {i}." for i in range(JOBS)]]  # said in one call
    done = sorted(output["output"]["job_id"] for output in outputs)
    assert done == [f"job{i}" for i in range(JOBS)]
    assert all(output["output"]["failure"] is None for output in outputs)
    assert all(output["output"]["audio"]["duration_s"] > 0 for output in outputs)


def test_the_sdk_config_asks_for_as_many_jobs_as_a_batch_holds() -> None:
    config = runpod_handler.concurrent(lambda job: {"job": job["id"]}, jobs=6)
    assert config["concurrency_modifier"](1) == 6

    async def both() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(run_job(config["handler"], {"id": i}) for i in "ab")))

    assert asyncio.run(both()) == [{"output": {"job": "a"}}, {"output": {"job": "b"}}]


# -- the heartbeat ------------------------------------------------------------------------


class StubSubscriberClient:
    def subscription_path(self, project: str, name: str) -> str:
        return f"projects/{project}/subscriptions/{name}"


def test_the_heartbeat_names_the_engine_its_version_and_the_models(fakes: Fakes) -> None:
    from gpu_worker.fast_engine import FastEngine
    from gpu_worker.qwen_engine import QwenEngine

    faster = FastEngine(
        model_source="/models/Qwen3-TTS-12Hz-1.7B-CustomVoice",
        max_prompt_tokens=1100,
        device="cpu",
        stream_frames=8,
        max_seq_len=3072,
        eager=True,
    )
    # Loaded, as far as the worker can tell: a model of its type, and its facts.
    faster._model = SimpleNamespace(model=SimpleNamespace(tts_model_type="custom_voice"))
    faster._facts = Engine.facts
    gw = fake_gateway(Settings(bucket="test-bucket"), fakes)
    worker = bootstrap(
        gw.settings,
        gateway=gw,
        models=ModelSet([Synthesizer(engine=faster, max_new_tokens=2048)]),
        subscriber_client=StubSubscriberClient(),
    )
    worker.heartbeat.beat()
    beat = fakes.backends.get("home-4090")
    assert beat is not None
    assert beat.kind is BackendKind.HOME_GPU
    capabilities = beat.capabilities
    assert capabilities.models == ("/models/Qwen3-TTS-12Hz-1.7B-CustomVoice",)
    assert capabilities.engine == EngineInfo(
        name="faster", library="faster-qwen3-tts", version="0.3.2"
    )
    validate_schema("backend-document.schema.json", as_json(beat.model_dump(mode="json")))
    # The baseline names itself, and its library's version.
    baseline = QwenEngine(model_source="m", max_prompt_tokens=1100, device="cpu")
    assert engine_info(baseline) == EngineInfo(name="qwen", library="qwen-tts", version="0.1.1")
    # Anything else is named by its class, with no version.
    assert engine_info(Engine()) == EngineInfo(name="Engine")
