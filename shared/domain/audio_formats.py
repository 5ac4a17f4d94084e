"""The output formats the API offers, and how each is written.

Kept apart from the encoder so the functions (no numpy, no soundfile) can validate a request.
Adding a format is one entry here: soundfile already writes FLAC, OGG/Opus, MP3 and raw PCM.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AudioFormat(StrEnum):
    WAV = "wav"


@dataclass(frozen=True, slots=True)
class FormatSpec:
    container: str
    """soundfile's ``format`` argument."""
    subtype: str
    """soundfile's ``subtype`` argument."""
    content_type: str
    extension: str


FORMATS: dict[AudioFormat, FormatSpec] = {
    AudioFormat.WAV: FormatSpec(
        container="WAV", subtype="PCM_16", content_type="audio/wav", extension="wav"
    ),
}
