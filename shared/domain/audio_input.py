"""What reference audio users may upload, recognised from its first bytes.

Kept free of numpy and soundfile so the HTTP functions can reject an upload that is not audio
before it is stored or queued; the worker decodes it with :mod:`gpu_worker.audio.ops`.
"""

from __future__ import annotations

from enum import StrEnum


class AudioContainer(StrEnum):
    WAV = "wav"
    FLAC = "flac"
    OGG = "ogg"
    MP3 = "mp3"


CONTENT_TYPES: dict[AudioContainer, str] = {
    AudioContainer.WAV: "audio/wav",
    AudioContainer.FLAC: "audio/flac",
    AudioContainer.OGG: "audio/ogg",
    AudioContainer.MP3: "audio/mpeg",
}

ACCEPTED = ", ".join(AudioContainer)
"""For error messages: the formats a user can send instead."""

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
"""Outside this range a header is corrupt or hostile, not a recording of a voice."""

MAX_CHANNELS = 8
"""Bounds decode memory: frames are capped by duration, but a header can claim 1024 channels."""


def sniff_container(data: bytes) -> AudioContainer | None:
    """The container the magic bytes announce, or None; says nothing about the codec inside."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return AudioContainer.WAV
    if data[:4] == b"fLaC":
        return AudioContainer.FLAC
    if data[:4] == b"OggS":
        return AudioContainer.OGG
    if data[:3] == b"ID3" or _is_mpeg_audio_frame(data[:4]):
        return AudioContainer.MP3
    return None


def _is_mpeg_audio_frame(header: bytes) -> bool:
    # 11 sync bits alone match too much (AAC/ADTS shares them with layer bits 00), so the
    # reserved values of version, layer, bitrate and sample rate must be absent as well.
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return False
    version = (header[1] >> 3) & 0b11
    layer = (header[1] >> 1) & 0b11
    bitrate = header[2] >> 4
    sample_rate = (header[2] >> 2) & 0b11
    return version != 0b01 and layer != 0b00 and bitrate != 0b1111 and sample_rate != 0b11


def declared_duration_s(data: bytes, container: AudioContainer) -> float | None:
    """The duration a WAV or FLAC header declares, read without decoding; None when unknown.

    Lets the API refuse a reference clip that is far too long at once, with a 422, instead of
    queueing a job that the worker would fail. OGG and MP3 carry no cheap total; the worker,
    which decodes every clip anyway, enforces the bound for them (and for lying headers).
    """
    if container is AudioContainer.WAV:
        return _wav_duration_s(data)
    if container is AudioContainer.FLAC:
        return _flac_duration_s(data)
    return None


def _wav_duration_s(data: bytes) -> float | None:
    rate = block_align = 0
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = (
            data[offset : offset + 4],
            int.from_bytes(data[offset + 4 : offset + 8], "little"),
        )
        body = offset + 8
        if chunk == b"fmt " and size >= 16:
            rate = int.from_bytes(data[body + 4 : body + 8], "little")
            block_align = int.from_bytes(data[body + 12 : body + 14], "little")
        elif chunk == b"data":
            if not (MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE) or block_align == 0:
                return None
            # A streaming writer may leave the size unset (0 or 0xFFFFFFFF): trust the bytes.
            frames_bytes = size if 0 < size < 0xFFFFFFFF else len(data) - body
            return frames_bytes / block_align / rate
        offset = body + size + (size & 1)  # chunks are word-aligned
    return None


def _flac_duration_s(data: bytes) -> float | None:
    # STREAMINFO is always the first metadata block: 4 bytes of "fLaC", a 4-byte block header.
    info = data[8:42]
    if len(info) < 18 or data[4] & 0x7F != 0:
        return None
    rate = int.from_bytes(info[10:13], "big") >> 4
    total = int.from_bytes(info[13:18], "big") & ((1 << 36) - 1)
    if total == 0 or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        return None  # an encoder that did not know the length writes 0
    return total / rate
