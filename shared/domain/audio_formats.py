"""The output formats the API offers: what each is called, served as, and whether it streams.

Kept apart from the encoders (``gpu_worker/audio``) so the functions, which have no numpy and
no codec libraries, can validate a request and label a response.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

SAMPLE_RATE = 24_000
"""Qwen3-TTS speaks at 24 kHz; every format keeps that rate (``pcm`` is defined by it)."""


class AudioFormat(StrEnum):
    WAV = "wav"
    MP3 = "mp3"
    OPUS = "opus"
    """Opus in an Ogg container."""
    FLAC = "flac"
    AAC = "aac"
    """AAC-LC in ADTS frames."""
    PCM = "pcm"
    """Raw signed 16-bit little-endian samples, 24 kHz, mono, no header."""


@dataclass(frozen=True, slots=True)
class FormatSpec:
    content_type: str
    extension: str
    streams: bool
    """Pieces encoded one after another concatenate into one valid file, so the audio can be
    sent while it is still being made. FLAC cannot: its header must state the total length."""


FORMATS: dict[AudioFormat, FormatSpec] = {
    AudioFormat.WAV: FormatSpec(content_type="audio/wav", extension="wav", streams=True),
    AudioFormat.MP3: FormatSpec(content_type="audio/mpeg", extension="mp3", streams=True),
    AudioFormat.OPUS: FormatSpec(content_type="audio/ogg", extension="opus", streams=True),
    AudioFormat.FLAC: FormatSpec(content_type="audio/flac", extension="flac", streams=False),
    AudioFormat.AAC: FormatSpec(content_type="audio/aac", extension="aac", streams=True),
    AudioFormat.PCM: FormatSpec(content_type="audio/pcm", extension="pcm", streams=True),
}

STREAMING_FORMATS: tuple[AudioFormat, ...] = tuple(f for f in AudioFormat if FORMATS[f].streams)


def audio_object_name(*, prefix: str, job_id: str, attempt: int, fmt: AudioFormat) -> str:
    """Where attempt ``attempt`` of a job puts its finished audio. Each attempt writes its own
    objects: a run that lost its claim but is still finishing cannot overwrite what the
    current attempt wrote, and the job's result names the objects of the attempt that won."""
    return f"{prefix}{job_id}/{attempt}.{FORMATS[fmt].extension}"


def part_object_name(
    *, prefix: str, job_id: str, attempt: int, index: int, fmt: AudioFormat
) -> str:
    """Where piece ``index`` of attempt ``attempt`` of a streamed job lives; an attempt's
    pieces, in order, concatenate into one file of ``fmt``."""
    return f"{prefix}{job_id}/{attempt}/part-{index:05d}.{FORMATS[fmt].extension}"
