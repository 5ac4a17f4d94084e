"""A fake engine for worker tests without a model: the facts of a released Base model, five
frames of a constant level for every line, or the error a test tells it to raise (the real
torch classes: ``AcceleratorError``, ``OutOfMemoryError``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from gpu_worker.audio.encoding import Waveform
from gpu_worker.bucket_io import BucketIO
from gpu_worker.engine import Line
from gpu_worker.prompt_cache import PromptCache
from gpu_worker.runner import JobRunner, RunnerConfig
from gpu_worker.synthesizer import ModelSet, Synthesizer
from gpu_worker.tasks import TaskExecutor
from shared.domain.backends import ModelFacts
from shared.domain.modes import ModelType
from shared.domain.voice_file import PromptItem
from shared.usecases.gateway import Gateway

RATE = 24_000
FRAME = 1920
BASE = ModelFacts(
    model="Qwen/Qwen3-TTS-12Hz-1.7B-Base",
    model_type=ModelType.BASE,
    codebook_size=2048,
    num_code_groups=16,
    speaker_embedding_dim=1024,
)


@dataclass
class FakeEngine:
    """An engine whose model the facts describe; it says every line as 5 frames of noise, or
    raises what a test tells it to (``errors``, one per call, then ``error`` every time)."""

    model_type: ModelType = ModelType.BASE
    facts: ModelFacts = BASE
    error: Exception | None = None
    errors: list[Exception | None] = field(default_factory=list)
    out_of_memory_above: int = 0
    never_fits: frozenset[str] = frozenset()
    calls: list[list[str]] = field(default_factory=list)
    model_source: str = "fake-base"
    device: str = "cuda:0"

    def load(self) -> None: ...

    def check_fits(self, line: Line, *, max_new_tokens: int) -> None: ...

    def synthesize(self, lines: Sequence[Line], *, max_new_tokens: int) -> list[Waveform]:
        self.calls.append([line.text for line in lines])
        error = self.errors.pop(0) if self.errors else self.error
        if error is not None:
            raise error
        too_big = self.out_of_memory_above and len(lines) > self.out_of_memory_above
        if too_big or any(line.text in self.never_fits for line in lines):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [Waveform(samples=np.full(5 * FRAME, 0.1, np.float32), sample_rate=RATE)] * len(
            lines
        )

    def stream(self, line: Line, *, max_new_tokens: int) -> Iterator[Waveform]:
        yield from self.synthesize([line], max_new_tokens=max_new_tokens)

    def create_voice_prompt(
        self, *, reference: Waveform, ref_text: str | None, x_vector_only: bool
    ) -> tuple[PromptItem, ...]:
        return ()

    def speaker_embedding(self, wave: Waveform) -> npt.NDArray[np.float32]:
        """A voice's "embedding" here is its level: waves of one level sound alike."""
        level = float(np.sqrt(np.mean(np.square(wave.samples)))) if wave.samples.size else 0.0
        return np.array([1.0, level], dtype=np.float32)


def runner_over(gateway: Gateway, engine: FakeEngine, *, max_attempts: int = 3) -> JobRunner:
    executor = TaskExecutor(
        models=ModelSet([Synthesizer(engine=engine, max_new_tokens=2048)]),
        io=BucketIO(gateway=gateway, prompts=PromptCache(max_bytes=0, max_file_bytes=1 << 24)),
        limits=gateway.settings.voices,
        max_chunk_chars=300,
        max_join_s=60,
    )
    config = RunnerConfig(
        worker_id="w1", backend_id="home-4090", lease_s=60, max_attempts=max_attempts
    )
    return JobRunner(gateway=gateway, executor=executor, config=config)
