"""Loudness normalisation to a target in LUFS (ITU-R BS.1770-4 integrated loudness).

Plain gain only: no limiter or compressor, so the voice keeps its dynamics. When reaching the
target would push the sample peak past the ceiling, the peak wins and the result says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyloudnorm

from gpu_worker.audio.encoding import Waveform
from shared.domain.errors import InvalidRequest
from shared.domain.synthesis import PEAK_DBFS_RANGE, TARGET_LUFS_RANGE

BLOCK_S = 0.4
"""BS.1770's gating block: pyloudnorm cannot measure anything shorter."""


@dataclass(frozen=True, slots=True)
class NormalizedAudio:
    wave: Waveform
    input_lufs: float
    output_lufs: float
    """Measured again after the gain, not assumed: it is below the target when peak_limited."""
    gain_db: float
    peak_limited: bool


def normalize(
    wave: Waveform, *, target_lufs: float = -18.0, peak_dbfs: float = -1.0
) -> NormalizedAudio:
    """Gain ``wave`` to ``target_lufs``, capped so that its peaks stay at or below ``peak_dbfs``.

    The ceiling is on sample peaks, not 4x-oversampled true peaks: the result is written as
    PCM at the same rate, where only sample values can clip.
    """
    _check_range("target_lufs", target_lufs, TARGET_LUFS_RANGE)
    _check_range("peak_dbfs", peak_dbfs, PEAK_DBFS_RANGE)
    samples = wave.samples.astype(np.float64)
    if samples.ndim != 1 or len(samples) < BLOCK_S * wave.sample_rate:
        raise InvalidRequest(
            f"the audio is {wave.duration_s:.3f} s long; loudness needs at least {BLOCK_S} s"
            " of mono audio",
            field="audio",
            details={"duration_s": round(wave.duration_s, 3), "min_duration_s": BLOCK_S},
        )
    if not np.isfinite(samples).all():
        raise InvalidRequest("the audio contains non-finite samples", field="audio")
    meter = pyloudnorm.Meter(wave.sample_rate)
    input_lufs = _integrated(meter, samples)
    if not math.isfinite(input_lufs):
        raise InvalidRequest(
            "the audio is silent: its loudness is below the -70 LUFS gate", field="audio"
        )
    gain_db = target_lufs - input_lufs
    peak_db = 20 * math.log10(float(np.max(np.abs(samples))))
    peak_limited = peak_db + gain_db > peak_dbfs
    if peak_limited:
        gain_db = peak_dbfs - peak_db
    out = (samples * 10 ** (gain_db / 20)).astype(np.float32)
    return NormalizedAudio(
        wave=Waveform(samples=out, sample_rate=wave.sample_rate),
        input_lufs=input_lufs,
        output_lufs=_integrated(meter, out.astype(np.float64)),
        gain_db=gain_db,
        peak_limited=peak_limited,
    )


def _integrated(meter: pyloudnorm.Meter, samples: npt.NDArray[np.float64]) -> float:
    return float(meter.integrated_loudness(samples))


def _check_range(field: str, value: float, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if not low <= value <= high:  # also rejects NaN
        raise InvalidRequest(
            f"{field} must be between {low:g} and {high:g}, got {value}",
            field=field,
            details={"min": low, "max": high},
        )
