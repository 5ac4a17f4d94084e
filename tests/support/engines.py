"""Both engines on the tiny model, built the way the worker builds them (``build_engine``).

The accelerated engine runs eagerly here (``TTS_WORKER__WITHOUT_CUDA=eager``): no CUDA on
these machines, so its graphs are replayed as plain calls (``gpu_worker/eager_graphs.py``).
"""

from __future__ import annotations

import numpy as np

from gpu_worker.audio.encoding import Waveform
from gpu_worker.bootstrap import build_engine
from gpu_worker.synthesizer import Synthesizer
from shared.domain.voice_file import PromptItem
from shared.settings import EngineKind, WithoutCuda, WorkerSettings

ENGINES = (EngineKind.QWEN, EngineKind.FASTER)

STREAM_FRAMES = 2
"""Small, so that the tiny model's half second of noise comes in several pieces."""


def tiny_synthesizer(
    source: str,
    *,
    kind: EngineKind,
    max_new_tokens: int = 2048,
    max_seq_len: int = 2048,
    batch_size: int = 1,
    batch_window_s: float = 0.0,
) -> Synthesizer:
    settings = WorkerSettings(
        models=(source,),
        device="cpu",
        engine=kind,
        without_cuda=WithoutCuda.EAGER,
        stream_frames=STREAM_FRAMES,
        max_seq_len=max_seq_len,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        batch_window_s=batch_window_s,
    )
    return Synthesizer(
        engine=build_engine(settings, source=source),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        batch_window_s=batch_window_s,
    )


def tone_prompt(base: Synthesizer) -> PromptItem:
    """An in-context prompt a Base model makes from a second of a tone: its codes and a text."""
    t = np.arange(24_000, dtype=np.float32) / 24_000
    tone = (0.2 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    (item,) = base.create_voice_prompt(
        reference=Waveform(samples=tone, sample_rate=24_000),
        ref_text="A line.",
        x_vector_only=False,
    )
    return item
