"""The models that listen to a worker's audio: Qwen3-ASR (what a chunk says, for the
intelligibility check) and Qwen3-ForcedAligner (when each word of it is said, for captions).

Both come from the ``qwen-asr`` package's transformers backend, in the worker's own process
and on its device. qwen-asr pins transformers 4.57.6 while qwen-tts pins 4.57.3; its
transformers path runs on 4.57.3 unchanged, so it is installed without its pins
(``gpu_worker/requirements-asr.txt``). Each model serves one call at a time (its own lock);
torch and qwen_asr are imported when a model is loaded, not with this module.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import math
import threading
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Final, Self, TypeVar

from gpu_worker.audio.encoding import Waveform
from gpu_worker.audio.ops import resampled
from gpu_worker.synthesizer import translated_errors
from shared.domain.catalog import Language
from shared.domain.errors import ModelLoadError
from shared.domain.verification import WordTiming

if TYPE_CHECKING:
    import torch
    from qwen_asr import Qwen3ASRModel, Qwen3ForcedAligner

SAMPLE_RATE: Final = 16000
"""What both models hear; other rates are resampled first."""

TOKENS_PER_SECOND: Final = 20
"""A ceiling on a transcript's tokens per second of audio, about three times the rate of fast
speech (Qwen's tokenizer spends one token on each digit, about one on a Chinese character)."""
MIN_NEW_TOKENS: Final = 32
"""Tokens every transcript may have whatever its length (and the ``language X<asr_text>``
prefix the model writes when it detects the language itself)."""

_LANGUAGES: Final[dict[Language, str]] = {
    Language.CHINESE: "Chinese",
    Language.ENGLISH: "English",
    Language.JAPANESE: "Japanese",
    Language.KOREAN: "Korean",
    Language.GERMAN: "German",
    Language.FRENCH: "French",
    Language.RUSSIAN: "Russian",
    Language.PORTUGUESE: "Portuguese",
    Language.SPANISH: "Spanish",
    Language.ITALIAN: "Italian",
}
"""qwen-asr's names of the languages a job can name (all among its supported languages)."""

M = TypeVar("M")


class Transcriber:
    """Qwen3-ASR: what each of a batch of waves says."""

    def __init__(self, model: Qwen3ASRModel) -> None:
        self._model = model
        self._lock = threading.Lock()

    @classmethod
    def load(cls, source: str, *, device: str) -> Self:
        """The model from a Hugging Face id (``Qwen/Qwen3-ASR-0.6B``) or a local directory,
        on ``device`` (``auto``: ``cuda:0`` when present, else ``cpu``)."""

        def build() -> Qwen3ASRModel:
            Qwen3ASRModel = import_qwen_asr().Qwen3ASRModel  # noqa: N806 - the library's class

            target, dtype = _placement(device)
            return Qwen3ASRModel.from_pretrained(
                source, device_map=target, dtype=dtype, max_new_tokens=MIN_NEW_TOKENS
            )

        return cls(_loaded("ASR model", source, "TTS_WORKER__VERIFY__ASR_MODEL", build))

    def transcribe(self, waves: Sequence[Waveform], *, language: Language) -> list[str]:
        """What each wave says, in one batched call; ``AUTO`` lets the model tell the
        language. Each transcript is at most ``token_budget`` tokens of the longest wave."""
        if not waves:
            return []
        audio = [(resampled(wave, rate=SAMPLE_RATE).samples, SAMPLE_RATE) for wave in waves]
        forced = None if language is Language.AUTO else _LANGUAGES[language]
        budget = token_budget(max(wave.duration_s for wave in waves))
        with self._lock, translated_errors():
            # qwen-asr reads its generation bound from this attribute at each call.
            self._model.max_new_tokens = budget
            results = self._model.transcribe(audio=audio, language=forced)
        if len(results) != len(waves):
            raise RuntimeError(f"{len(waves)} waves, {len(results)} transcripts")
        return [str(result.text) for result in results]


class Aligner:
    """Qwen3-ForcedAligner: when each word of a known text is said in a wave."""

    def __init__(self, model: Qwen3ForcedAligner) -> None:
        self._model = model
        self._lock = threading.Lock()

    @classmethod
    def load(cls, source: str, *, device: str) -> Self:
        """The model from a Hugging Face id (``Qwen/Qwen3-ForcedAligner-0.6B``) or a local
        directory, on ``device`` (``auto``: ``cuda:0`` when present, else ``cpu``)."""

        def build() -> Qwen3ForcedAligner:
            Qwen3ForcedAligner = import_qwen_asr().Qwen3ForcedAligner  # noqa: N806 - the library's class

            target, dtype = _placement(device)
            return Qwen3ForcedAligner.from_pretrained(source, device_map=target, dtype=dtype)

        return cls(_loaded("forced aligner", source, "TTS_WORKER__VERIFY__ALIGNER_MODEL", build))

    def align(self, wave: Waveform, *, text: str, language: Language) -> tuple[WordTiming, ...]:
        """The words of ``text`` as the aligner splits them (at spaces, each Chinese character
        alone, Japanese and Korean by their own tokenizers; punctuation dropped), each with
        its start and end in seconds. Times lie within the wave and never go back: each word
        starts no earlier than the one before it ends."""
        if not any(ch.isalnum() for ch in text):
            return ()
        samples = resampled(wave, rate=SAMPLE_RATE).samples
        with self._lock, translated_errors():
            results = self._model.align(
                audio=(samples, SAMPLE_RATE), text=text, language=_aligner_language(language, text)
            )
        if len(results) != 1:
            raise RuntimeError(f"one wave, {len(results)} alignments")
        return ordered_timings(
            ((str(item.text), item.start_time, item.end_time) for item in results[0].items),
            duration_s=wave.duration_s,
        )


def import_qwen_asr() -> ModuleType:
    """The ``qwen_asr`` package, imported with the process's floating-point arithmetic left as
    it was.

    qwen-asr imports nagisa (Japanese word splitting), whose network library, dynet, is built
    with ``-ffast-math``: loading it switches the loading thread's SSE unit to flush subnormal
    numbers to zero (FTZ and DAZ), for every computation that thread and the threads it starts
    make afterwards, the TTS model's and numpy's included. The default floating-point
    environment is put back at once (``fesetenv(FE_DFL_ENV)``, glibc's "the state at start")."""
    package = importlib.import_module("qwen_asr")
    _default_float_environment()
    return package


def _default_float_environment() -> None:
    name = ctypes.util.find_library("m")
    if name is None:
        return  # no C maths library to ask (not glibc): nothing loaded one that changed it
    libm = ctypes.CDLL(name)
    libm.fesetenv.argtypes = [ctypes.c_void_p]
    libm.fesetenv(ctypes.c_void_p(-1))  # FE_DFL_ENV is ((const fenv_t *) -1) in glibc


def token_budget(duration_s: float) -> int:
    """The most tokens a transcript of ``duration_s`` seconds of speech may take."""
    return MIN_NEW_TOKENS + math.ceil(TOKENS_PER_SECOND * max(duration_s, 0.0))


def ordered_timings(
    words: Iterable[tuple[str, float, float]], *, duration_s: float
) -> tuple[WordTiming, ...]:
    """Word timings that are valid whatever the model said: every time within
    ``[0, duration_s]`` (a time that is not a number counts as the one before it), and the
    sequence start, end, next start... never decreasing. Empty words are dropped."""
    timings: list[WordTiming] = []
    floor = 0.0
    for word, start, end in words:
        if not word:
            continue
        start_s = _clamped(start, low=floor, high=duration_s)
        end_s = _clamped(end, low=start_s, high=duration_s)
        timings.append(WordTiming(word=word, start_s=start_s, end_s=end_s))
        floor = end_s
    return tuple(timings)


def _clamped(value: float, *, low: float, high: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        value = low
    return min(max(value, low), high)


def _aligner_language(language: Language, text: str) -> str:
    """The language the aligner splits ``text`` into words by. Only Japanese and Korean have
    splitters of their own; every other language is split at spaces (Chinese characters one
    by one), so for ``AUTO`` the script decides."""
    if language is not Language.AUTO:
        return _LANGUAGES[language]
    names = [unicodedata.name(ch, "") for ch in text]
    if any(name.startswith(("HIRAGANA", "KATAKANA")) for name in names):
        return _LANGUAGES[Language.JAPANESE]
    if any(name.startswith("HANGUL") for name in names):
        return _LANGUAGES[Language.KOREAN]
    return _LANGUAGES[Language.ENGLISH]


def _placement(device: str) -> tuple[str, torch.dtype]:
    import torch

    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    return device, torch.bfloat16 if device.startswith("cuda") else torch.float32


def _loaded(what: str, source: str, setting: str, load: Callable[[], M]) -> M:
    try:
        return load()
    except (ImportError, OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(
            f"cannot load the {what} {source!r} (set by {setting}): {exc}. Without internet "
            "access use a local model directory (gpu_worker.tiny_asr builds offline ones)."
        ) from exc
