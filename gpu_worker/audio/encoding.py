"""Audio encoding with soundfile. Worker-side only: the functions never import numpy."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soundfile as sf

from shared.domain.audio_formats import FORMATS, AudioFormat
from shared.domain.errors import SynthesisFailed


@dataclass(frozen=True, slots=True)
class Waveform:
    samples: npt.NDArray[np.float32]
    """Mono, float32 in [-1, 1]."""
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True, slots=True)
class EncodedAudio:
    data: bytes
    format: AudioFormat
    content_type: str
    extension: str
    sample_rate: int
    duration_s: float


def encode(wave: Waveform, *, fmt: AudioFormat) -> EncodedAudio:
    if wave.samples.ndim != 1 or len(wave.samples) == 0:
        raise SynthesisFailed(f"expected non-empty mono audio, got shape {wave.samples.shape}")
    if not np.isfinite(wave.samples).all():
        raise SynthesisFailed("the model produced non-finite samples")
    spec = FORMATS[fmt]
    buffer = io.BytesIO()
    sf.write(
        buffer,
        np.clip(wave.samples, -1.0, 1.0),
        wave.sample_rate,
        format=spec.container,
        subtype=spec.subtype,
    )
    return EncodedAudio(
        data=buffer.getvalue(),
        format=fmt,
        content_type=spec.content_type,
        extension=spec.extension,
        sample_rate=wave.sample_rate,
        duration_s=round(wave.duration_s, 6),
    )
