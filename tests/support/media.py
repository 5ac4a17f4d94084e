"""Small real media for tests: a sine-wave clip and a valid voice prompt file."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import torch

from shared.domain.voice_file import PromptItem, VoicePromptFile, dumps


def wav_bytes(seconds: float = 1.0, *, fmt: str = "WAV") -> bytes:
    t = np.arange(int(24000 * seconds), dtype=np.float32) / 24000
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * 220 * t), 24000, format=fmt)
    return buffer.getvalue()


def prompt_bytes(*, name: str = "From file", dim: int = 16) -> bytes:
    item = PromptItem(
        ref_code=torch.randint(0, 64, (20, 4)),
        ref_spk_embedding=torch.randn(dim),
        x_vector_only_mode=False,
        icl_mode=True,
        ref_text="A line.",
    )
    return dumps(VoicePromptFile(items=(item,), metadata={"name": name}, model="tiny-base"))
