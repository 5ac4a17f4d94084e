"""Worker-side audio handling: decoding what users upload, and stitching synthesised clips.

Uploads are untrusted: every limit is checked against the header before a sample is decoded,
and every decoder failure becomes an :class:`InvalidRequest` on the ``audio`` field.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from math import gcd

import numpy as np
import numpy.typing as npt
import soundfile as sf
from scipy.signal import resample_poly

from gpu_worker.audio.encoding import Waveform
from shared.domain.audio_input import (
    ACCEPTED,
    MAX_CHANNELS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    sniff_container,
)
from shared.domain.errors import InvalidRequest

SILENCE_PEAK = 1e-4
"""About -80 dBFS: below it there is no voice to clone or normalise."""

EDGE_FADE_S = 0.010
JOINT_GAP_S = 0.15
"""Silence between sentences spoken separately."""
_BLOCK_FRAMES = 1 << 16
_TRUNCATION_TOLERANCE = 0.01
"""mpg123 estimates the length of MP3s that lack a Xing header; exact formats are never short."""


def decode(data: bytes, *, max_duration_s: float, target_rate: int | None = None) -> Waveform:
    """Decode a WAV, FLAC, Ogg (Vorbis/Opus) or MP3 upload to mono float32.

    Resamples only when ``target_rate`` is given and differs, so callers that keep the
    source rate (loudness normalisation) do not pay for, or hear, a resampling filter.
    """
    if max_duration_s <= 0:
        raise ValueError(f"max_duration_s must be positive, got {max_duration_s}")
    if target_rate is not None and target_rate <= 0:
        raise ValueError(f"target_rate must be positive, got {target_rate}")
    if not data:
        raise _bad("the audio is empty")
    container = sniff_container(data)
    if container is None:
        raise _bad(f"unrecognised audio format; send one of: {ACCEPTED}", accepted=ACCEPTED)
    try:
        with sf.SoundFile(io.BytesIO(data)) as source:
            samples, rate = _read_mono(source, max_duration_s=max_duration_s)
    except sf.LibsndfileError as exc:
        # The message embeds the BytesIO's repr; error_string is libsndfile's own reason.
        raise _bad(
            f"the {container} audio is corrupt or truncated", reason=exc.error_string
        ) from exc
    except sf.SoundFileError as exc:
        raise _bad(f"the {container} audio is corrupt or truncated", reason=str(exc)) from exc
    if not np.isfinite(samples).all():
        raise _bad("the audio contains non-finite samples")
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise _bad("the audio is silent")
    wave = Waveform(samples=samples, sample_rate=rate)
    return wave if target_rate is None else resampled(wave, rate=target_rate)


def resampled(wave: Waveform, *, rate: int) -> Waveform:
    """``wave`` at ``rate`` (polyphase filter); itself when already there."""
    if rate != wave.sample_rate:
        divisor = gcd(wave.sample_rate, rate)
        samples = resample_poly(wave.samples, rate // divisor, wave.sample_rate // divisor)
        wave = Waveform(samples=np.asarray(samples, dtype=np.float32), sample_rate=rate)
    # Float sources and resampling overshoot can leave [-1, 1], which Waveform promises.
    return Waveform(samples=np.clip(wave.samples, -1.0, 1.0), sample_rate=wave.sample_rate)


def _read_mono(
    source: sf.SoundFile, *, max_duration_s: float
) -> tuple[npt.NDArray[np.float32], int]:
    rate, channels, frames = source.samplerate, source.channels, source.frames
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise _bad(
            f"unsupported sample rate {rate} Hz; expected {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz",
            sample_rate=rate,
        )
    if channels > MAX_CHANNELS:
        raise _bad(f"too many channels ({channels}); at most {MAX_CHANNELS}", channels=channels)
    if frames <= 0:
        raise _bad("the audio is empty")
    if frames > max_duration_s * rate:
        raise _bad(
            f"the audio is {frames / rate:.1f} s long; at most {max_duration_s:g} s",
            duration_s=round(frames / rate, 3),
            max_duration_s=max_duration_s,
        )
    # Block-wise, so the peak memory is one mono copy rather than frames x channels floats.
    # Not SoundFile.blocks(): it ignores short reads and yields stale buffer contents.
    mono = np.empty(frames, dtype=np.float32)
    done = 0
    while done < frames:
        block = source.read(min(_BLOCK_FRAMES, frames - done), dtype="float32", always_2d=True)
        if len(block) == 0:
            break
        mono[done : done + len(block)] = block.mean(axis=1, dtype=np.float32)
        done += len(block)
    if done < frames * (1 - _TRUNCATION_TOLERANCE):
        raise _bad(
            "the audio is truncated: the header promises more than the file holds",
            expected_frames=frames,
            decoded_frames=done,
        )
    return mono[:done], rate


def join_waves(waves: Sequence[Waveform], *, gap_s: float = JOINT_GAP_S) -> Waveform:
    """Concatenate clips with ``gap_s`` of silence, fading each internal edge."""
    if not waves:
        raise ValueError("join_waves needs at least one clip")
    rate = waves[0].sample_rate
    if any(w.sample_rate != rate for w in waves):
        raise ValueError(f"clips differ in sample rate: {sorted({w.sample_rate for w in waves})}")
    last = len(waves) - 1
    return concatenate(
        [joint(w, first=i == 0, last=i == last, gap_s=gap_s) for i, w in enumerate(waves)]
    )


def joint(wave: Waveform, *, first: bool, last: bool, gap_s: float = JOINT_GAP_S) -> Waveform:
    """One clip as it stands in a joined whole: faded at each internal edge, followed by
    ``gap_s`` of silence unless it is the last. Joining clip by clip this way lets a worker send
    each piece as soon as it is made, and the pieces add up to exactly the joined whole.

    Clips synthesised separately rarely end on a zero crossing; a 10 ms linear fade at every
    joint keeps the step from clicking, while the outer edges stay as the model made them.
    """
    if wave.samples.ndim != 1:
        raise ValueError("joint expects a mono clip")
    if gap_s < 0:
        raise ValueError(f"gap_s must not be negative, got {gap_s}")
    rate = wave.sample_rate
    clip = wave.samples.astype(np.float32, copy=True)
    # The ramp reaches 0 at the joint, so the silence starts and ends without a step.
    n = min(max(1, round(EDGE_FADE_S * rate)), len(clip) // 2)
    ramp = np.arange(n, dtype=np.float32) / max(n, 1)
    if n and not first:
        clip[:n] *= ramp
    if n and not last:
        clip[-n:] *= ramp[::-1]
    if not last:
        clip = np.concatenate([clip, np.zeros(round(gap_s * rate), dtype=np.float32)])
    return Waveform(samples=clip, sample_rate=rate)


class StreamedClip:
    """``joint`` for a clip that arrives in pieces: what ``feed`` and ``finish`` return adds up
    to exactly ``joint(whole, first=..., last=...)``, and only the last fade's few milliseconds
    are held back, so a piece can be sent as soon as it is made."""

    def __init__(self, *, first: bool, last: bool, sample_rate: int) -> None:
        self._first = first
        self._last = last
        self._rate = sample_rate
        self._fade = max(1, round(EDGE_FADE_S * sample_rate))
        self._held = np.zeros(0, dtype=np.float32)
        self._started = False

    def feed(self, piece: Waveform) -> Waveform:
        """What of the clip so far can be sent now (perhaps nothing)."""
        if piece.sample_rate != self._rate:
            raise ValueError(f"a {piece.sample_rate} Hz piece in a {self._rate} Hz clip")
        held = np.concatenate([self._held, piece.samples.astype(np.float32)])
        n = self._fade
        # Until two fades' worth has come, the clip may yet be short enough that joint would
        # fade less; after that the fades are known.
        if not self._started and len(held) < 2 * n:
            self._held = held
            return self._wave(np.zeros(0, dtype=np.float32))
        if not self._started and not self._first:
            held[:n] *= np.arange(n, dtype=np.float32) / n
        self._started = True
        self._held = held[-n:]
        return self._wave(held[:-n])

    def finish(self) -> Waveform:
        """The rest: the held tail, faded, and the gap after it unless the clip is last."""
        if not self._started:
            return joint(self._wave(self._held), first=self._first, last=self._last)
        tail = self._held.copy()
        if not self._last:
            n = len(tail)
            tail *= (np.arange(n, dtype=np.float32) / n)[::-1]
            tail = np.concatenate([tail, np.zeros(round(JOINT_GAP_S * self._rate), np.float32)])
        return self._wave(tail)

    def _wave(self, samples: npt.NDArray[np.float32]) -> Waveform:
        return Waveform(samples=samples, sample_rate=self._rate)


def concatenate(waves: Sequence[Waveform]) -> Waveform:
    if not waves:
        raise ValueError("concatenate needs at least one clip")
    rate = waves[0].sample_rate
    if any(w.sample_rate != rate for w in waves):
        raise ValueError(f"clips differ in sample rate: {sorted({w.sample_rate for w in waves})}")
    return Waveform(samples=np.concatenate([w.samples for w in waves]), sample_rate=rate)


def _bad(message: str, **details: object) -> InvalidRequest:
    return InvalidRequest(message, field="audio", details=details)
