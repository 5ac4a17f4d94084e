"""What the released Qwen3-TTS models can say: languages and built-in speakers.

The API validates against these before a job exists, so a typo never reaches a GPU.
"""

from __future__ import annotations

from enum import StrEnum

from shared.domain.errors import InvalidRequest


class Language(StrEnum):
    AUTO = "auto"
    CHINESE = "chinese"
    ENGLISH = "english"
    JAPANESE = "japanese"
    KOREAN = "korean"
    GERMAN = "german"
    FRENCH = "french"
    RUSSIAN = "russian"
    PORTUGUESE = "portuguese"
    SPANISH = "spanish"
    ITALIAN = "italian"


_LANGUAGE_ALIASES: dict[str, Language] = {
    "zh": Language.CHINESE,
    "en": Language.ENGLISH,
    "ja": Language.JAPANESE,
    "ko": Language.KOREAN,
    "de": Language.GERMAN,
    "fr": Language.FRENCH,
    "ru": Language.RUSSIAN,
    "pt": Language.PORTUGUESE,
    "es": Language.SPANISH,
    "it": Language.ITALIAN,
}

BUILTIN_SPEAKERS: tuple[str, ...] = (
    "Vivian",
    "Serena",
    "Uncle_Fu",
    "Dylan",
    "Eric",
    "Ryan",
    "Aiden",
    "Ono_Anna",
    "Sohee",
)
_SPEAKERS_BY_KEY = {name.lower(): name for name in BUILTIN_SPEAKERS}


def parse_language(value: str) -> Language:
    """Accept a model language name or an ISO 639-1 code, in any case."""
    key = value.strip().lower()
    if key in _LANGUAGE_ALIASES:
        return _LANGUAGE_ALIASES[key]
    try:
        return Language(key)
    except ValueError:
        valid = [lang.value for lang in Language] + sorted(_LANGUAGE_ALIASES)
        raise InvalidRequest(
            f"unknown language {value!r}",
            field="language",
            details={"valid": valid},
        ) from None


def parse_speaker(value: str) -> str:
    """Return the canonical built-in speaker name, matching case-insensitively."""
    name = _SPEAKERS_BY_KEY.get(value.strip().lower())
    if name is None:
        raise InvalidRequest(
            f"unknown speaker {value!r}",
            field="speaker",
            details={"valid": list(BUILTIN_SPEAKERS)},
        )
    return name
