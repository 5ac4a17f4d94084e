"""Both engines on the tiny model, built the way the worker builds them (``build_engine``).

The accelerated engine runs eagerly here (``TTS_WORKER__WITHOUT_CUDA=eager``): no CUDA on
these machines, so its graphs are replayed as plain calls (``gpu_worker/eager_graphs.py``).
"""

from __future__ import annotations

from gpu_worker.bootstrap import build_engine
from gpu_worker.synthesizer import Synthesizer
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
