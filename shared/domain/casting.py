"""Casting presets: how an emotion and an intensity read in a VoiceDesign description.

The VoiceDesign model takes a free-text description; casting a character in several moods is
the character's base description plus one phrase per mood. Named emotions get phrasing that
designs well; any other emotion word is used as written.
"""

from __future__ import annotations

EMOTION_PRESETS: dict[str, str] = {
    "neutral": "speaking in a calm, even, neutral tone",
    "happy": "speaking happily, with a bright, smiling voice",
    "sad": "speaking sadly, with a heavy, subdued voice",
    "angry": "speaking angrily, with a tense, forceful voice",
    "fearful": "speaking fearfully, with a shaky, hurried voice",
    "surprised": "speaking with surprise, voice rising with astonishment",
    "disgusted": "speaking with disgust, voice tight and dismissive",
    "tender": "speaking tenderly, soft and warm",
    "excited": "speaking excitedly, fast and energetic",
    "whisper": "whispering, breathy and quiet",
}

INTENSITY_PRESETS: dict[str, str] = {
    "low": "The emotion is subtle and restrained.",
    "medium": "The emotion is clear but natural.",
    "high": "The emotion is strong and intense.",
}


def cast_instruct(base_description: str, *, emotion: str, intensity: str) -> str:
    mood = EMOTION_PRESETS.get(emotion.casefold(), f"speaking in a {emotion} manner")
    return f"{base_description.rstrip('. ')}, {mood}. {INTENSITY_PRESETS[intensity]}"
