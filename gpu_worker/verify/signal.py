"""The checks that need no model: what the waveform itself says about a chunk.

Each returns one ``Measure``: the value, the bound from ``VerifySettings`` and whether it held.
They look for the failures long-form TTS is known for: words dropped (too short for the text),
babble or a stall (too long, or silence), a model stuck in a loop (a block of frames said again),
clipping, and a chunk far louder or quieter than the rest.
"""

from __future__ import annotations

import math
import unicodedata

import numpy as np
import numpy.typing as npt
import pyloudnorm

from gpu_worker.audio.encoding import Waveform
from shared.domain.verification import Check, Measure
from shared.settings import VerifySettings

FRAME_S = 0.02
"""Frames for silence and repetition: 20 ms, a hop of the analysis window below."""
_WINDOW_S = 0.04
_BANDS = 40
"""Spectral bands per frame for the repetition check (log-spaced, like a coarse mel scale)."""
_LOUDNESS_BLOCK_S = 0.4
"""BS.1770's gating block: a shorter chunk is measured repeated end to end (same loudness)."""
_FLOOR_LUFS = -70.0
"""BS.1770's absolute gate: anything quieter is reported as this."""
_CLIP_LEVEL = 0.999


def measure_signal(
    wave: Waveform, *, text: str, target_lufs: float, bounds: VerifySettings
) -> tuple[Measure, ...]:
    """Every signal check of one chunk, in ``SIGNAL_CHECKS`` order."""
    return (
        duration(wave, text=text, bounds=bounds),
        silence(wave, bounds=bounds),
        clipping(wave, bounds=bounds),
        loudness(wave, target_lufs=target_lufs, bounds=bounds),
        repetition(wave, bounds=bounds),
    )


def spoken_chars(text: str) -> int:
    """Letters and digits: what takes time to say (spaces and punctuation take little)."""
    return sum(ch.isalnum() for ch in text)


def is_logographic(text: str) -> bool:
    """Whether most of ``text``'s letters are CJK ideographs, kana or hangul: one of those takes
    a syllable to say, where a Latin or Cyrillic letter takes a fraction of one. Decided by
    the text, not the job's language, so ``auto`` gets the right bounds too."""
    letters = [ch for ch in text if ch.isalnum()]
    wide = sum(unicodedata.east_asian_width(ch) in "WF" for ch in letters)
    return bool(letters) and wide * 2 > len(letters)


def duration(wave: Waveform, *, text: str, bounds: VerifySettings) -> Measure:
    low, high = (
        (bounds.min_s_per_char_cjk, bounds.max_s_per_char_cjk)
        if is_logographic(text)
        else (bounds.min_s_per_char, bounds.max_s_per_char)
    )
    per_char = wave.duration_s / max(1, spoken_chars(text))
    return Measure(
        check=Check.DURATION,
        value=round(per_char, 4),
        low=low,
        bound=high,
        passed=low <= per_char <= high,
    )


def silence(wave: Waveform, *, bounds: VerifySettings) -> Measure:
    """The longest run of silent frames anywhere: leading, trailing or inside."""
    quiet = _silent_frames(wave, floor_db=bounds.silence_floor_db)
    longest = _longest_run(quiet) * FRAME_S
    return Measure(
        check=Check.SILENCE,
        value=round(longest, 3),
        bound=bounds.max_silence_s,
        passed=longest <= bounds.max_silence_s,
    )


def clipping(wave: Waveform, *, bounds: VerifySettings) -> Measure:
    samples = wave.samples
    share = float(np.count_nonzero(np.abs(samples) >= _CLIP_LEVEL)) / max(1, samples.size)
    return Measure(
        check=Check.CLIPPING,
        value=round(share, 6),
        bound=bounds.max_clipped,
        passed=share <= bounds.max_clipped,
    )


def loudness(wave: Waveform, *, target_lufs: float, bounds: VerifySettings) -> Measure:
    off = abs(integrated_lufs(wave) - target_lufs)
    return Measure(
        check=Check.LOUDNESS,
        value=round(off, 2),
        bound=bounds.max_loudness_off_db,
        passed=off <= bounds.max_loudness_off_db,
    )


def integrated_lufs(wave: Waveform) -> float:
    samples = wave.samples.astype(np.float64)
    if samples.size == 0:
        return _FLOOR_LUFS
    block = math.ceil(_LOUDNESS_BLOCK_S * wave.sample_rate)
    if samples.size < block:
        # Repeating a short chunk keeps its mean square, which is all the meter averages.
        samples = np.tile(samples, math.ceil(block / samples.size))
    value = float(pyloudnorm.Meter(wave.sample_rate).integrated_loudness(samples))
    return value if math.isfinite(value) else _FLOOR_LUFS


def repetition(wave: Waveform, *, bounds: VerifySettings) -> Measure:
    """The longest block of sounding frames that repeats an earlier block at a fixed distance.

    Frames are log band energies with each band's mean over the chunk's sounding frames taken
    away, so that what
    every frame shares (the voice's timbre, or a noise floor) does not make frames alike; only
    frames whose spectral shape matches closely, one after another, count. A loop in the model
    repeats syllables exactly; natural speech repeats a word at most, a fraction of a second.
    """
    sounding = ~_silent_frames(wave, floor_db=bounds.silence_floor_db)
    features = _band_features(wave, sounding=sounding)
    sounding = sounding[: len(features)]
    longest = 0
    min_lag = max(1, round(bounds.repetition_min_lag_s / FRAME_S))
    if len(features) > min_lag:
        similar = (features @ features.T) >= bounds.repetition_similarity
        for lag in range(min_lag, len(features)):
            run = np.diagonal(similar, offset=lag) & sounding[lag:] & sounding[:-lag]
            longest = max(longest, _longest_run(run))
    seconds = longest * FRAME_S
    return Measure(
        check=Check.REPETITION,
        value=round(seconds, 3),
        bound=bounds.max_repeat_s,
        passed=seconds <= bounds.max_repeat_s,
    )


def _frame_rms_db(wave: Waveform) -> npt.NDArray[np.float64]:
    hop = max(1, round(FRAME_S * wave.sample_rate))
    count = len(wave.samples) // hop
    if count == 0:
        return np.zeros(0)
    frames = wave.samples[: count * hop].astype(np.float64).reshape(count, hop)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    return np.asarray(20 * np.log10(np.maximum(rms, 1e-10)), dtype=np.float64)


def _silent_frames(wave: Waveform, *, floor_db: float) -> npt.NDArray[np.bool_]:
    """Frames below the floor, or 40 dB below the chunk's loudest frame (a quiet recording's
    pauses are still pauses)."""
    level = _frame_rms_db(wave)
    if level.size == 0:
        return np.zeros(0, dtype=bool)
    threshold = max(floor_db, float(level.max()) - 40.0)
    return level < threshold


def _band_features(wave: Waveform, *, sounding: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    hop = max(1, round(FRAME_S * wave.sample_rate))
    window = max(hop, round(_WINDOW_S * wave.sample_rate))
    samples = wave.samples.astype(np.float64)
    count = (len(samples) - window) // hop + 1
    if count <= 0:
        return np.zeros((0, _BANDS))
    index = np.arange(window)[None, :] + hop * np.arange(count)[:, None]
    spectrum = np.abs(np.fft.rfft(samples[index] * np.hanning(window), axis=1)) ** 2
    edges = np.unique(np.geomspace(1, spectrum.shape[1], _BANDS + 1).astype(int))
    bands = np.add.reduceat(spectrum, edges[:-1], axis=1)
    logs = np.log(bands + 1e-10)
    # The mean of the sounding frames only: silence would pull it down and leave every
    # sounding frame sharing one large offset.
    voiced = sounding[:count]
    logs -= logs[voiced].mean(axis=0, keepdims=True) if voiced.any() else logs.mean(axis=0)
    norms = np.linalg.norm(logs, axis=1, keepdims=True)
    return np.asarray(logs / np.maximum(norms, 1e-10), dtype=np.float64)


def _longest_run(flags: npt.NDArray[np.bool_]) -> int:
    """The longest stretch of consecutive ``True``."""
    if not flags.any():
        return 0
    padded = np.concatenate(([0], flags.astype(np.int8), [0]))
    changes = np.flatnonzero(np.diff(padded))
    return int((changes[1::2] - changes[::2]).max())
