"""The worker's native dependencies, checked once at start with a message that says what to do.

Without them the worker would start, load gigabytes of model, take a job and only then fail on
its first encode. What it needs outside Python:
- libsndfile (through ``soundfile``): WAV, FLAC, MP3 and Ogg encoding and decoding. Its wheels
  bundle it on Windows, macOS and x86-64 Linux; elsewhere it is a system package.
- FFmpeg's libraries (through PyAV, whose wheels bundle them): AAC, streaming encoders and the
  ``atempo`` filter behind ``speed``.
- Not sox: qwen-tts imports the ``sox`` package (which prints "SoX could not be found!" when the
  binary is missing), but only its 25 Hz tokenizer calls it, and every released Qwen3-TTS model
  uses the 12 Hz one. Its absence is reported as a note, never a failure.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

Importer = Callable[[str], ModuleType]

_SOUNDFILE_FORMATS = ("WAV", "FLAC", "OGG", "MP3")


@dataclass(frozen=True)
class Report:
    problems: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _libsndfile(importer: Importer) -> list[str]:
    try:
        soundfile = importer("soundfile")
    except (ImportError, OSError) as exc:  # OSError: the library itself did not load
        return [
            f"libsndfile cannot be loaded ({exc}). Reinstall the soundfile wheel "
            "(`pip install --force-reinstall soundfile==0.14.0`, which bundles it on Windows and "
            "x86-64 Linux) or install the system package (Debian/Ubuntu: `apt-get install "
            "libsndfile1`)."
        ]
    available = set(soundfile.available_formats())
    missing = [f for f in _SOUNDFILE_FORMATS if f not in available]
    if missing:
        version = getattr(soundfile, "__libsndfile_version__", "?")
        return [
            f"libsndfile {version} cannot write {', '.join(missing)}: MP3 needs libsndfile "
            "1.1 or newer. Use the soundfile wheel's bundled library instead of an older system "
            "one."
        ]
    return []


def _ffmpeg(importer: Importer) -> list[str]:
    try:
        av = importer("av")
    except (ImportError, OSError) as exc:
        return [
            f"PyAV (FFmpeg) cannot be loaded ({exc}). Reinstall it from its wheel "
            "(`pip install --force-reinstall av==18.1.0`), which bundles FFmpeg's libraries."
        ]
    problems = []
    try:
        av.codec.Codec("aac", "w")
    except Exception as exc:  # noqa: BLE001 - PyAV raises its own errors for unknown codecs
        problems.append(f"FFmpeg (PyAV) has no AAC encoder ({exc}): reinstall the av wheel.")
    if "atempo" not in getattr(av.filter, "filters_available", set()):
        problems.append("FFmpeg (PyAV) has no atempo filter (speed): reinstall the av wheel.")
    return problems


def check(
    *,
    importer: Importer = importlib.import_module,
    which: Callable[[str], str | None] = shutil.which,
) -> Report:
    """What is missing (``problems``: the worker cannot run) and what is merely absent."""
    problems = _libsndfile(importer) + _ffmpeg(importer)
    notes = []
    if which("sox") is None:
        notes.append(
            "sox is not installed: harmless (only the 25 Hz tokenizer, which no released model "
            "uses, calls it); qwen-tts prints 'SoX could not be found!' at import regardless."
        )
    return Report(problems=tuple(problems), notes=tuple(notes))
