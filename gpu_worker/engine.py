"""The Qwen3-TTS engines: each wraps one model, loaded once, called with keyword-only typed
arguments; a ``ModelSet`` holds the models one worker serves.

Keyword-only methods make argument-order and bytes-vs-base64 bugs
impossible to write: every value is named, and typed as what it is.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from qwen_tts import Qwen3TTSModel, VoiceClonePromptItem

from gpu_worker.audio.encoding import Waveform
from shared.domain.catalog import Language
from shared.domain.errors import (
    ConfigurationError,
    ModelLoadError,
    SynthesisFailed,
    SynthesisRunaway,
    TransientError,
)
from shared.domain.modes import MODES_BY_MODEL_TYPE, Mode, ModelType, modes_offered
from shared.domain.voice_file import PromptItem, VoicePromptFile

log = logging.getLogger(__name__)

CODEC_FRAME_RATE_HZ = 12.5
"""The "12 Hz" speech tokenizer emits 12.5 frames a second: one generated token per frame."""
MIN_BUDGET_S = 4.0
SECONDS_PER_CHAR = 0.35
"""Generous for Chinese (about 4 characters a second) and very generous for alphabetic text."""


def token_budget(text: str, *, cap: int) -> int:
    """Bound ``max_new_tokens`` by the text: short text can fail to emit its stop token."""
    seconds = MIN_BUDGET_S + SECONDS_PER_CHAR * len(text)
    return max(1, min(cap, math.ceil(seconds * CODEC_FRAME_RATE_HZ)))


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, *, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        resolved = getattr(torch, dtype)
    except AttributeError:
        raise ModelLoadError(f"unknown dtype {dtype!r} (TTS_WORKER__DTYPE)") from None
    if not isinstance(resolved, torch.dtype):
        raise ModelLoadError(f"unknown dtype {dtype!r} (TTS_WORKER__DTYPE)")
    return resolved


class QwenEngine:
    """Owns one ``Qwen3TTSModel``. ``load()`` is idempotent and safe from many threads."""

    def __init__(
        self, *, model_source: str, device: str = "auto", dtype: str = "auto", max_new_tokens: int
    ) -> None:
        self.model_source = model_source
        self.device = resolve_device(device)
        self._dtype = resolve_dtype(dtype, device=self.device)
        self._max_new_tokens = max_new_tokens
        self._model: Qwen3TTSModel | None = None
        self._load_lock = threading.Lock()
        # One generation at a time per model: the GPU is the bottleneck, and qwen-tts keeps
        # per-call state on the model object.
        self._generate_lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------

    def load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            started = time.perf_counter()
            try:
                self._model = Qwen3TTSModel.from_pretrained(
                    self.model_source, device_map=self.device, dtype=self._dtype
                )
            except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
                raise ModelLoadError(
                    f"cannot load Qwen3-TTS model {self.model_source!r} (set by "
                    f"TTS_WORKER__MODEL): {exc}. Without internet access use a local model "
                    "directory, or `make run MODEL=tiny` for the offline plumbing-only model."
                ) from exc
            log.info(
                "model loaded",
                extra={
                    "model": self.model_source,
                    "device": self.device,
                    "model_type": self.model_type,
                    "load_s": round(time.perf_counter() - started, 3),
                },
            )

    @property
    def model(self) -> Qwen3TTSModel:
        if self._model is None:
            self.load()
        assert self._model is not None
        return self._model

    @property
    def model_type(self) -> ModelType:
        raw = str(self.model.model.tts_model_type)
        try:
            return ModelType(raw)
        except ValueError:
            raise ModelLoadError(
                f"{self.model_source!r} is a {raw!r} model; this worker serves "
                f"{', '.join(ModelType)}"
            ) from None

    @property
    def modes(self) -> tuple[Mode, ...]:
        return MODES_BY_MODEL_TYPE[self.model_type]

    # -- generation ---------------------------------------------------------------------------

    def generate_custom_voice(
        self,
        *,
        text: str,
        speaker: str,
        language: Language,
        instruct: str | None = None,
        seed: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Waveform:
        return self._generate(
            "generate_custom_voice",
            text=text,
            seed=seed,
            max_new_tokens=max_new_tokens,
            speaker=speaker,
            language=_model_language(language),
            instruct=instruct,
        )

    def generate_voice_design(
        self,
        *,
        text: str,
        instruct: str,
        language: Language,
        seed: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Waveform:
        return self._generate(
            "generate_voice_design",
            text=text,
            seed=seed,
            max_new_tokens=max_new_tokens,
            instruct=instruct,
            language=_model_language(language),
        )

    def generate_from_prompt(
        self,
        *,
        text: str,
        language: Language,
        prompt: VoicePromptFile,
        seed: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Waveform:
        # A file may hold several items (a batch); one voice speaks with its first.
        item = VoiceClonePromptItem(**prompt.items[0].as_kwargs())
        return self._generate(
            "generate_voice_clone",
            text=text,
            seed=seed,
            max_new_tokens=max_new_tokens,
            language=_model_language(language),
            voice_clone_prompt=[item],
        )

    def create_voice_prompt(
        self, *, reference: Waveform, ref_text: str | None, x_vector_only: bool
    ) -> tuple[PromptItem, ...]:
        model = self.model
        with self._generate_lock, _translated_generation_errors():
            items = model.create_voice_clone_prompt(
                ref_audio=(reference.samples, reference.sample_rate),
                ref_text=ref_text,
                x_vector_only_mode=x_vector_only,
            )
        return tuple(PromptItem.from_fields(item) for item in items)

    def _generate(
        self,
        method: str,
        *,
        text: str,
        seed: int | None,
        max_new_tokens: int | None,
        **kwargs: object,
    ) -> Waveform:
        model = self.model
        budget = token_budget(text, cap=self._max_new_tokens)
        # A caller's own lower cap truncates by request; only our bound signals a runaway.
        limit = budget if max_new_tokens is None else min(budget, max_new_tokens)
        with self._generate_lock, _translated_generation_errors():
            if seed is not None:
                # Under the lock: nothing else draws from the generator between seed and sample.
                torch.manual_seed(seed)
            wavs, sample_rate = getattr(model, method)(text=text, max_new_tokens=limit, **kwargs)
        wave = _single(wavs, sample_rate)
        frames = wave.duration_s * CODEC_FRAME_RATE_HZ
        if limit == budget and frames >= budget - 1:
            raise SynthesisRunaway(
                f"the model did not stop: {wave.duration_s:.1f} s of audio for {len(text)} "
                f"characters reached the {budget}-frame bound set for that text",
                details={"duration_s": round(wave.duration_s, 3), "chars": len(text)},
            )
        return wave


class ModelSet:
    """The models one worker serves, at most one per model type; modes follow from them."""

    def __init__(self, engines: Sequence[QwenEngine]) -> None:
        by_type: dict[ModelType, QwenEngine] = {}
        for engine in engines:
            if engine.model_type in by_type:
                raise ConfigurationError(
                    f"two {engine.model_type} models configured: "
                    f"{by_type[engine.model_type].model_source} and {engine.model_source}"
                )
            by_type[engine.model_type] = engine
        self._by_type = by_type

    @property
    def modes(self) -> tuple[Mode, ...]:
        return modes_offered(self._by_type)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(e.model_source for e in self._by_type.values())

    @property
    def device(self) -> str:
        return next(iter(self._by_type.values())).device

    def of_type(self, model_type: ModelType) -> QwenEngine:
        try:
            return self._by_type[model_type]
        except KeyError:
            raise SynthesisFailed(
                f"this worker has no {model_type} model (it has {sorted(self._by_type)})"
            ) from None


def _model_language(language: Language) -> str:
    return language.value.capitalize()


def _single(wavs: list[np.ndarray], sample_rate: int) -> Waveform:
    if len(wavs) != 1:
        raise SynthesisFailed(f"expected one waveform, the model returned {len(wavs)}")
    samples = np.asarray(wavs[0], dtype=np.float32).reshape(-1)
    return Waveform(samples=samples, sample_rate=int(sample_rate))


@contextmanager
def _translated_generation_errors() -> Iterator[None]:
    """Out-of-memory is worth retrying (elsewhere or later); a rejected input is not."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise TransientError(f"GPU out of memory: {exc}") from exc
    except (ValueError, RuntimeError, IndexError) as exc:
        raise SynthesisFailed(f"the model rejected the request: {exc}") from exc
