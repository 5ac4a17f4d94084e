from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from gpu_worker.audio.encoding import Waveform, encode
from shared.domain.audio_formats import FORMATS, AudioFormat
from shared.domain.errors import SynthesisFailed


def tone(seconds: float, rate: int = 24000) -> Waveform:
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    return Waveform(
        samples=(0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate=rate
    )


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_every_format_decodes_back_with_its_duration(fmt: AudioFormat) -> None:
    audio = encode(tone(1.25), fmt=fmt)
    samples, rate = sf.read(io.BytesIO(audio.data))
    assert rate == audio.sample_rate == 24000
    assert audio.duration_s == pytest.approx(len(samples) / rate) == 1.25
    assert audio.content_type == FORMATS[fmt].content_type


def test_wav_is_16_bit_pcm_and_clipped() -> None:
    loud = Waveform(samples=np.full(2400, 3.0, dtype=np.float32), sample_rate=24000)
    audio = encode(loud, fmt=AudioFormat.WAV)
    info = sf.info(io.BytesIO(audio.data))
    assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 1)
    samples, _ = sf.read(io.BytesIO(audio.data))
    assert samples.max() <= 1.0


@pytest.mark.parametrize(
    "samples",
    [np.zeros(0, dtype=np.float32), np.zeros((2, 10), dtype=np.float32),
     np.array([0.0, np.nan], dtype=np.float32)],
)  # fmt: skip
def test_unusable_model_output_is_a_permanent_failure(samples: np.ndarray) -> None:
    with pytest.raises(SynthesisFailed):
        encode(Waveform(samples=samples, sample_rate=24000), fmt=AudioFormat.WAV)
