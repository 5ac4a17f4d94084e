from __future__ import annotations

import math

import numpy as np
import pyloudnorm
import pytest

from gpu_worker.audio.encoding import Waveform
from gpu_worker.audio.loudness import normalize
from shared.domain.errors import InvalidRequest

RATE = 24000


def measured(wave: Waveform) -> float:
    return float(pyloudnorm.Meter(wave.sample_rate).integrated_loudness(wave.samples))


def at_lufs(samples: np.ndarray, lufs: float) -> Waveform:
    """Scale a signal to an exact loudness, so tests start from a known level."""
    wave = Waveform(samples=samples.astype(np.float32), sample_rate=RATE)
    gain = 10 ** ((lufs - measured(wave)) / 20)
    return Waveform(samples=(samples * gain).astype(np.float32), sample_rate=RATE)


def speechlike(seconds: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * RATE)) / RATE
    return 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))


def peak_dbfs(wave: Waveform) -> float:
    return 20 * math.log10(float(np.abs(wave.samples).max()))


def test_quiet_clip_is_brought_to_the_target() -> None:
    quiet = at_lufs(speechlike(), -30.0)
    result = normalize(quiet, target_lufs=-18.0)
    assert result.input_lufs == pytest.approx(-30.0, abs=0.05)
    assert measured(result.wave) == pytest.approx(-18.0, abs=0.1)
    assert result.output_lufs == pytest.approx(-18.0, abs=0.1)
    assert result.gain_db == pytest.approx(12.0, abs=0.1)
    assert not result.peak_limited
    assert result.wave.samples.dtype == np.float32
    assert len(result.wave.samples) == len(quiet.samples)
    assert result.wave.sample_rate == RATE


def test_loud_clip_is_turned_down() -> None:
    result = normalize(at_lufs(speechlike(), -10.0), target_lufs=-23.0)
    assert result.gain_db == pytest.approx(-13.0, abs=0.1)
    assert result.output_lufs == pytest.approx(-23.0, abs=0.1)


def test_peaky_signal_is_held_at_the_ceiling_and_reports_it() -> None:
    samples = np.zeros(3 * RATE)
    samples[:: RATE // 4] = 1.0  # clicks: little energy, full-scale peaks
    samples += 0.001 * np.random.default_rng(1).standard_normal(len(samples))
    result = normalize(at_lufs(samples, -40.0), target_lufs=-18.0, peak_dbfs=-1.0)
    assert result.peak_limited
    assert peak_dbfs(result.wave) <= -1.0 + 1e-4  # float32 rounding only
    assert peak_dbfs(result.wave) == pytest.approx(-1.0, abs=0.01)
    assert result.output_lufs < -18.0 - 1.0


def test_short_clip_is_rejected() -> None:
    short = Waveform(samples=np.full(int(0.3 * RATE), 0.1, dtype=np.float32), sample_rate=RATE)
    with pytest.raises(InvalidRequest, match=r"at least 0\.4 s") as info:
        normalize(short)
    assert info.value.field == "audio"


def test_silence_is_rejected() -> None:
    silent = Waveform(samples=np.zeros(RATE, dtype=np.float32), sample_rate=RATE)
    with pytest.raises(InvalidRequest, match="silent") as info:
        normalize(silent)
    assert info.value.field == "audio"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target_lufs": -80.0}, "target_lufs"),
        ({"target_lufs": 0.0}, "target_lufs"),
        ({"target_lufs": math.nan}, "target_lufs"),
        ({"peak_dbfs": 0.5}, "peak_dbfs"),
        ({"peak_dbfs": -30.0}, "peak_dbfs"),
    ],
)
def test_targets_out_of_range_are_rejected(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        normalize(at_lufs(speechlike(1.0), -20.0), **kwargs)
    assert info.value.field == field
