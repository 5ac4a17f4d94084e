"""The accelerated engine: faster-qwen3-tts (MIT) around the same ``Qwen3TTSModel``.

It captures the talker's decode step and the code predictor's 15-step loop as CUDA graphs over
static KV caches, and streams: audio every ``stream_frames`` codec frames, so the first piece
arrives after that many frames instead of after the whole line. It has no batching: a batch
is its lines one after another (each still several times faster than the baseline), each
stopped at its own token budget.

Its static cache holds ``max_seq_len`` tokens; past that it stops without a word, so every
line is measured first (``check_fits``) and one that cannot fit fails with ``PromptTooLong``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from faster_qwen3_tts import FasterQwen3TTS
from faster_qwen3_tts.predictor_graph import PredictorGraph
from faster_qwen3_tts.talker_graph import TalkerGraph
from qwen_tts import Qwen3TTSModel

from gpu_worker.audio.encoding import Waveform
from gpu_worker.eager_graphs import EagerPredictorGraph, EagerTalkerGraph, without_cuda_synchronize
from gpu_worker.engine import (
    Clone,
    Design,
    Line,
    Speaker,
    line_budget,
    model_language,
    same_voice_kind,
)
from gpu_worker.qwen_engine import (
    WARM_UP_FRAMES,
    QwenEngine,
    prompt_item,
    warm_up_line,
    waveform,
)
from shared.domain.errors import ConfigurationError, ModelLoadError, PromptTooLong

log = logging.getLogger(__name__)

# The sampling the library's own from_pretrained gives its predictor graph (sampling happens
# inside the graph, so it is fixed at construction).
PREDICTOR_SAMPLING: dict[str, Any] = {"do_sample": True, "top_k": 50, "temperature": 0.9}
WARM_UP_PREFILL = 100
"""The prompt length the talker graph is captured at (its step does not depend on it)."""


class FastEngine(QwenEngine):
    """A ``QwenEngine`` whose generation runs through faster-qwen3-tts's graphs.

    ``eager=True`` replays the graphs eagerly (``eager_graphs.py``): the library's decode loop
    on a machine without CUDA, for tests and development. Otherwise it needs a CUDA device.
    """

    NAME = "faster"
    LIBRARY = "faster-qwen3-tts"

    def __init__(
        self,
        *,
        model_source: str,
        max_prompt_tokens: int,
        device: str = "auto",
        dtype: str = "auto",
        stream_frames: int,
        max_seq_len: int,
        eager: bool = False,
    ) -> None:
        super().__init__(
            model_source=model_source,
            max_prompt_tokens=max_prompt_tokens,
            device=device,
            dtype=dtype,
        )
        if not eager and not (self.device.startswith("cuda") and torch.cuda.is_available()):
            raise ConfigurationError(
                f"TTS_WORKER__ENGINE=faster needs a CUDA device (CUDA graphs); this worker has "
                f"device {self.device!r} and CUDA is {'' if torch.cuda.is_available() else 'not '}"
                "available. Use TTS_WORKER__ENGINE=qwen, or TTS_WORKER__WITHOUT_CUDA=baseline "
                "to fall back to it, or =eager to run the graphs eagerly (slow; tests only)."
            )
        self._stream_frames = stream_frames
        self._max_seq_len = max_seq_len
        self._eager = eager
        self._fast: FasterQwen3TTS | None = None

    @property
    def max_seq_len(self) -> int:
        return self._max_seq_len

    @property
    def fast(self) -> FasterQwen3TTS:
        self.load()
        assert self._fast is not None
        return self._fast

    def _prepare(self, model: Qwen3TTSModel) -> None:
        """Build both graphs around the loaded model and capture them before the first job."""
        talker = model.model.talker
        config = model.model.config.talker_config
        predictor_class, talker_class = (
            (EagerPredictorGraph, EagerTalkerGraph)
            if self._eager
            else (PredictorGraph, TalkerGraph)
        )
        if self._eager:
            without_cuda_synchronize()
        try:
            fast = FasterQwen3TTS(
                base_model=model,
                predictor_graph=predictor_class(
                    talker.code_predictor,
                    talker.code_predictor.model.config,
                    config.hidden_size,
                    device=self.device,
                    dtype=self.dtype,
                    **PREDICTOR_SAMPLING,
                ),
                talker_graph=talker_class(
                    talker.model,
                    config,
                    device=self.device,
                    dtype=self.dtype,
                    max_seq_len=self._max_seq_len,
                ),
                device=self.device,
                dtype=self.dtype,
                max_seq_len=self._max_seq_len,
            )
            fast.warmup(prefill_len=min(WARM_UP_PREFILL, self._max_seq_len // 2))
            # Graph capture is not all: the first generation also builds the decode masks for
            # an unpadded prompt. One short line pays for both before the first job.
            _generate(fast, warm_up_line(model), max_new_tokens=WARM_UP_FRAMES)
        except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
            raise ModelLoadError(
                f"faster-qwen3-tts could not capture its graphs for {self.model_source!r} on "
                f"{self.device}: {exc}. TTS_WORKER__ENGINE=qwen runs without them."
            ) from exc
        self._fast = fast

    # -- generation -------------------------------------------------------------------------

    def check_fits(self, line: Line, *, max_new_tokens: int) -> None:
        # The voice prompt first: measuring the prefill below builds its embeddings.
        super().check_fits(line, max_new_tokens=max_new_tokens)
        prompt = self._prompt_length(line)
        # The decode loop stops once a position reaches max_seq_len - 1.
        room = self._max_seq_len - 1 - prompt
        if max_new_tokens > room:
            raise PromptTooLong(
                f"a prompt of {prompt} tokens and a budget of {max_new_tokens} new tokens do not "
                f"fit this worker's sequence length of {self._max_seq_len} "
                "(TTS_WORKER__MAX_SEQ_LEN); shorten the text or the reference audio",
                details={
                    "prompt_tokens": prompt,
                    "max_new_tokens": max_new_tokens,
                    "max_seq_len": self._max_seq_len,
                },
            )

    def synthesize(self, lines: Sequence[Line], *, max_new_tokens: int) -> list[Waveform]:
        same_voice_kind(lines)  # the same contract as the baseline's list call
        # One line at a time, so each stops at its own budget, not at the batch's largest.
        fast = self.fast
        return [
            _generate(fast, line, max_new_tokens=line_budget(line, max_new_tokens=max_new_tokens))
            for line in lines
        ]

    def stream(self, line: Line, *, max_new_tokens: int) -> Iterator[Waveform]:
        fast = self.fast
        common: dict[str, Any] = {
            "text": line.text,
            "language": model_language(line.language),
            "max_new_tokens": max_new_tokens,
            "chunk_size": self._stream_frames,
        }
        match line.voice:
            case Speaker(name=name, instruct=instruct):
                pieces = fast.generate_custom_voice_streaming(
                    speaker=name, instruct=instruct, **common
                )
            case Design(instruct=instruct):
                pieces = fast.generate_voice_design_streaming(instruct=instruct, **common)
            case Clone() as clone:
                pieces = fast.generate_voice_clone_streaming(
                    voice_clone_prompt=[prompt_item(clone)], **common
                )
        for samples, rate, _timing in pieces:
            if np.size(samples):
                yield waveform(samples, rate)

    @torch.inference_mode()
    def _prompt_length(self, line: Line) -> int:
        """The prefill the library would build for ``line``, built by the library itself (its
        embeddings cost little next to generating); the talker's input is (1, tokens, H)."""
        fast = self.fast
        language = model_language(line.language)
        prepared: tuple[Any, ...]
        match line.voice:
            case Speaker(name=name, instruct=instruct):
                prepared = fast._prepare_generation_custom(
                    text=line.text, language=language, speaker=name, instruct=instruct
                )
            case Design(instruct=instruct):
                prepared = fast._prepare_generation_custom(
                    text=line.text, language=language, speaker=None, instruct=instruct
                )
            case Clone() as clone:
                prepared = fast._prepare_generation(
                    text=line.text,
                    language=language,
                    voice_clone_prompt=[prompt_item(clone)],
                )
        talker_input = prepared[3]
        return int(talker_input.shape[1])


def _generate(fast: FasterQwen3TTS, line: Line, *, max_new_tokens: int) -> Waveform:
    common: dict[str, Any] = {
        "text": line.text,
        "language": model_language(line.language),
        "max_new_tokens": max_new_tokens,
    }
    match line.voice:
        case Speaker(name=name, instruct=instruct):
            wavs, rate = fast.generate_custom_voice(speaker=name, instruct=instruct, **common)
        case Design(instruct=instruct):
            wavs, rate = fast.generate_voice_design(instruct=instruct, **common)
        case Clone() as clone:
            wavs, rate = fast.generate_voice_clone(
                voice_clone_prompt=[prompt_item(clone)], **common
            )
    return waveform(np.concatenate([np.asarray(w).reshape(-1) for w in wavs]), rate)
