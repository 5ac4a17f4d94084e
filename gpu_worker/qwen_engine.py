"""The baseline engine: qwen-tts's ``Qwen3TTSModel`` itself, on any device.

Its generate methods take lists, so a batch is one call (the GPU runs it for little more than
the price of one). It has no streaming call: a streamed line is heard frame by frame from the
library's own generation and decoded every ``stream_frames`` frames (``frame_stream.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import torch
from qwen_tts import Qwen3TTSModel, VoiceClonePromptItem

from gpu_worker.audio.encoding import Waveform
from gpu_worker.audio.ops import resampled
from gpu_worker.engine import (
    Clone,
    Design,
    Line,
    Speaker,
    Voice,
    check_prompt_length,
    model_language,
    same_voice_kind,
)
from gpu_worker.frame_stream import stream_frames
from shared.domain.backends import ModelFacts
from shared.domain.catalog import Language
from shared.domain.errors import ModelLoadError, SynthesisFailed
from shared.domain.modes import ModelType
from shared.domain.voice_file import PromptItem, VoicePromptFile

log = logging.getLogger(__name__)

WARM_UP_TEXT = "Hello."
WARM_UP_FRAMES = 8

V = TypeVar("V", Speaker, Design, Clone)


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
    """Owns one ``Qwen3TTSModel``. ``load()`` is idempotent and safe from many threads.
    ``max_prompt_tokens`` bounds a voice prompt (``TTS_WORKER__MAX_PROMPT_TOKENS``); a streamed
    line comes in pieces of ``stream_frames`` codec frames (``TTS_WORKER__STREAM_FRAMES``)."""

    NAME = "qwen"
    LIBRARY = "qwen-tts"

    def __init__(
        self,
        *,
        model_source: str,
        max_prompt_tokens: int,
        device: str = "auto",
        dtype: str = "auto",
        stream_frames: int = 8,
    ) -> None:
        self._source = model_source
        self._max_prompt_tokens = max_prompt_tokens
        self._stream_frames = stream_frames
        self._device = resolve_device(device)
        self._dtype = resolve_dtype(dtype, device=self._device)
        self._model: Qwen3TTSModel | None = None
        self._facts: ModelFacts | None = None
        self._load_lock = threading.Lock()

    @property
    def model_source(self) -> str:
        return self._source

    @property
    def device(self) -> str:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    # -- lifecycle --------------------------------------------------------------------------

    def load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            started = time.perf_counter()
            model = self._load_model()
            self._facts = model_facts(model, source=self._source)
            self._prepare(model)
            self._model = model
            log.info(
                "model loaded",
                extra={
                    "model": self._source,
                    "engine": type(self).__name__,
                    "device": self._device,
                    "model_type": self.model_type,
                    "load_s": round(time.perf_counter() - started, 3),
                },
            )

    def _load_model(self) -> Qwen3TTSModel:
        try:
            return Qwen3TTSModel.from_pretrained(
                self._source, device_map=self._device, dtype=self._dtype
            )
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(
                f"cannot load Qwen3-TTS model {self._source!r} (set by "
                f"TTS_WORKER__MODELS): {exc}. Without internet access use a local model "
                "directory, or `make run MODEL=tiny` for the offline plumbing-only model."
            ) from exc

    def _prepare(self, model: Qwen3TTSModel) -> None:
        """Warm up before the first job: one short line, so the first caller does not pay for
        kernel selection and allocator growth."""
        with torch.inference_mode():
            self._call(model, [warm_up_line(model)], max_new_tokens=WARM_UP_FRAMES)

    @property
    def model(self) -> Qwen3TTSModel:
        if self._model is None:
            self.load()
        assert self._model is not None
        return self._model

    @property
    def model_type(self) -> ModelType:
        return _model_type(self.model, source=self._source)

    @property
    def facts(self) -> ModelFacts:
        if self._facts is None:
            self.load()
        assert self._facts is not None
        return self._facts

    # -- generation -------------------------------------------------------------------------

    def check_fits(self, line: Line, *, max_new_tokens: int) -> None:
        """qwen-tts grows its cache as it goes, so only the voice prompt is bounded."""
        if isinstance(line.voice, Clone):
            check_prompt_length(
                line.voice, limit=self._max_prompt_tokens, text_tokens=self._text_tokens
            )

    def _text_tokens(self, text: str) -> int:
        """The tokens of ``text`` by the model's own tokenizer."""
        return int(self.model.processor(text=text, return_tensors="pt")["input_ids"].shape[-1])

    def synthesize(self, lines: Sequence[Line], *, max_new_tokens: int) -> list[Waveform]:
        return self._call(self.model, lines, max_new_tokens=max_new_tokens)

    def stream(self, line: Line, *, max_new_tokens: int) -> Iterator[Waveform]:
        model = self.model
        inner = model.model
        # A clone is decoded after its reference codes, as the library decodes it whole.
        context = line.voice.prompt.items[0].ref_code if isinstance(line.voice, Clone) else None
        pieces = stream_frames(
            lambda: self._call(model, [line], max_new_tokens=max_new_tokens),
            talker=inner.talker,
            codec=inner.speech_tokenizer,
            eos_id=int(inner.config.talker_config.codec_eos_token_id),
            piece_frames=self._stream_frames,
            context=context,
        )
        for samples, rate in pieces:
            if samples.size:
                yield waveform(samples, rate)

    def create_voice_prompt(
        self, *, reference: Waveform, ref_text: str | None, x_vector_only: bool
    ) -> tuple[PromptItem, ...]:
        items = self.model.create_voice_clone_prompt(
            ref_audio=(reference.samples, reference.sample_rate),
            ref_text=ref_text,
            x_vector_only_mode=x_vector_only,
        )
        return tuple(PromptItem.from_fields(item) for item in items)

    def speaker_embedding(self, wave: Waveform) -> npt.NDArray[np.float32]:
        model = self.model.model
        if model.speaker_encoder is None:
            raise SynthesisFailed(f"{self._source} has no speaker encoder (not a Base model)")
        rate = int(model.speaker_encoder_sample_rate)
        samples = resampled(wave, rate=rate).samples
        with torch.inference_mode():
            embedding = model.extract_speaker_embedding(audio=samples, sr=rate)
        return np.asarray(embedding.float().cpu().numpy(), dtype=np.float32)

    @staticmethod
    def _call(
        model: Qwen3TTSModel, lines: Sequence[Line], *, max_new_tokens: int
    ) -> list[Waveform]:
        kind = same_voice_kind(lines)
        texts = [line.text for line in lines]
        languages = [model_language(line.language) for line in lines]
        if kind is Speaker:
            speakers = [_as(Speaker, line) for line in lines]
            wavs, rate = model.generate_custom_voice(
                text=texts,
                speaker=[s.name for s in speakers],
                language=languages,
                instruct=[s.instruct or "" for s in speakers],
                max_new_tokens=max_new_tokens,
            )
        elif kind is Design:
            wavs, rate = model.generate_voice_design(
                text=texts,
                instruct=[_as(Design, line).instruct for line in lines],
                language=languages,
                max_new_tokens=max_new_tokens,
            )
        else:
            wavs, rate = model.generate_voice_clone(
                text=texts,
                language=languages,
                voice_clone_prompt=[prompt_item(_as(Clone, line)) for line in lines],
                max_new_tokens=max_new_tokens,
            )
        if len(wavs) != len(lines):
            raise SynthesisFailed(f"{len(lines)} lines in, {len(wavs)} waveforms out")
        return [waveform(w, rate) for w in wavs]


def prompt_item(voice: Clone) -> VoiceClonePromptItem:
    # A file may hold several items (a batch); one voice speaks with its first.
    return VoiceClonePromptItem(**voice.prompt.items[0].as_kwargs())


def waveform(samples: npt.ArrayLike, sample_rate: int) -> Waveform:
    flat = np.asarray(samples, dtype=np.float32).reshape(-1)
    return Waveform(samples=flat, sample_rate=int(sample_rate))


def model_facts(model: Qwen3TTSModel, *, source: str) -> ModelFacts:
    """What ``model`` accepts in a voice prompt, from its own config: a code indexes both the
    code predictor's embeddings and the speech tokenizer's codebooks, so it must be below both;
    the speaker embedding is the speaker encoder's output (Base models only)."""
    try:
        config = model.model.config
        talker = config.talker_config
        decoder = model.model.speech_tokenizer.model.config.decoder_config
        has_encoder = model.model.speaker_encoder is not None
        return ModelFacts(
            model=source,
            model_type=str(config.tts_model_type),
            codebook_size=min(
                int(talker.code_predictor_config.vocab_size), int(decoder.codebook_size)
            ),
            num_code_groups=int(talker.num_code_groups),
            speaker_embedding_dim=(
                int(config.speaker_encoder_config.enc_dim) if has_encoder else None
            ),
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"{source!r} has no 12 Hz codec config this worker can read ({exc}); the released "
            "Qwen3-TTS models all have one"
        ) from exc


def _model_type(model: Qwen3TTSModel, *, source: str) -> ModelType:
    raw = str(model.model.tts_model_type)
    try:
        return ModelType(raw)
    except ValueError:
        raise ModelLoadError(
            f"{source!r} is a {raw!r} model; this worker serves {', '.join(ModelType)}"
        ) from None


def warm_up_line(model: Qwen3TTSModel) -> Line:
    """A short line this model can say: a Base model clones a synthetic tone (x-vector only)."""
    match str(model.model.tts_model_type):
        case ModelType.CUSTOM_VOICE:
            speakers = sorted(model.get_supported_speakers() or ["vivian"])
            voice: Voice = Speaker(name=speakers[0])
        case ModelType.VOICE_DESIGN:
            voice = Design(instruct="A calm voice.")
        case _:
            rate = 24_000
            t = np.arange(rate, dtype=np.float32) / rate
            tone = (0.1 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
            items = model.create_voice_clone_prompt(
                ref_audio=(tone, rate), ref_text=None, x_vector_only_mode=True
            )
            prompt = VoicePromptFile(items=tuple(PromptItem.from_fields(i) for i in items))
            voice = Clone(prompt=prompt)
    return Line(text=WARM_UP_TEXT, language=Language.AUTO, voice=voice)


def _as(kind: type[V], line: Line) -> V:
    voice = line.voice
    if not isinstance(voice, kind):
        raise ValueError(f"expected a {kind.__name__} voice, got {type(voice).__name__}")
    return voice
