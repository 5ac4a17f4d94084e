"""The batched accelerated engine: faster-qwen3-tts-batch (MIT) on top of ``FastEngine``.

faster-qwen3-tts says one line at a time; faster-qwen3-tts-batch runs up to ``batch_size``
lines through one decode loop, with the talker's step and the code predictor's loop captured
as CUDA graphs over a static KV cache of ``batch_size`` rows (left-padded prompts, one shared
position). Lines alone, streams and the measuring of prompts stay ``FastEngine``'s.

What the library offers and what is used:

* Its public batch call (``BatchedFasterQwen3TTS.generate_voice_clone_batch``) clones from
  reference *audio* only, so saved voice prompts, built-in speakers and designed voices could
  not go in. Its decode loop, ``batched_fast_generate``, takes prepared prompts of any kind:
  each line is prepared here exactly as faster-qwen3-tts prepares it for one line, and the
  codes are decoded as it decodes them (an in-context clone's reference codes first, then cut).
* The loop takes one ``max_new_tokens``: the call's largest. Each line's codes are cut to its
  own budget before decoding.
* The loop stops every row, silently, once the shared position reaches ``max_seq_len - 1``: a
  batch whose longest prompt plus largest budget does not fit is said line by line instead.
* Its graph classes ask CUDA for a device and capture CUDA graphs; with ``eager`` (no CUDA,
  tests only) they run their steps as plain calls, as ``eager_graphs.py`` does for the
  single-line ones.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from faster_qwen3_tts import FasterQwen3TTS
from faster_qwen3_tts_batch.batched_generate import batched_fast_generate
from faster_qwen3_tts_batch.batched_predictor_graph import BatchedPredictorGraph
from faster_qwen3_tts_batch.batched_talker_graph import BatchedTalkerGraph
from qwen_tts import Qwen3TTSModel

from gpu_worker.audio.encoding import Waveform
from gpu_worker.eager_graphs import _indexed, _Replay
from gpu_worker.engine import (
    Clone,
    Design,
    Line,
    Speaker,
    line_budget,
    model_language,
    same_voice_kind,
)
from gpu_worker.fast_engine import PREDICTOR_SAMPLING, WARM_UP_PREFILL, FastEngine, _generate
from gpu_worker.qwen_engine import WARM_UP_FRAMES, prompt_item, warm_up_line, waveform
from shared.domain.errors import ModelLoadError

log = logging.getLogger(__name__)


class EagerBatchedTalkerGraph(BatchedTalkerGraph):  # type: ignore[misc]
    """The batched talker step, run as a plain call where the library would replay a graph."""

    @torch.inference_mode()
    def capture(self, prefill_len: int = 100, num_warmup: int = 3) -> None:
        self._init_cache_layers()
        self._attention_mask_2d.fill_(1)
        self.cache_position[0] = prefill_len
        # The static mask buffer the library sizes at capture, from the same function.
        self.attn_mask = self._mask_fn(
            config=self.model.config,
            input_embeds=self.input_buf,
            attention_mask=self._attention_mask_2d,
            cache_position=self.cache_position,
            past_key_values=self.static_cache,
        ).clone()
        self.graph = _Replay(self._decode_step)
        self.captured = True


class EagerBatchedPredictorGraph(BatchedPredictorGraph):  # type: ignore[misc]
    """The batched 15-step predictor loop, run as a plain call."""

    @torch.inference_mode()
    def capture(self, num_warmup: int = 3) -> None:
        self._init_cache_layers()
        self._build_attention_masks()
        self.graph = _Replay(self._full_loop)
        self.captured = True


class BatchedEngine(FastEngine):
    """A ``FastEngine`` that says up to ``batch_size`` lines in one batched decode loop."""

    NAME = "batched"
    LIBRARY = "faster-qwen3-tts-batch"

    def __init__(
        self,
        *,
        model_source: str,
        max_prompt_tokens: int,
        device: str = "auto",
        dtype: str = "auto",
        stream_frames: int,
        max_seq_len: int,
        batch_size: int,
        eager: bool = False,
    ) -> None:
        super().__init__(
            model_source=model_source,
            max_prompt_tokens=max_prompt_tokens,
            device=device,
            dtype=dtype,
            stream_frames=stream_frames,
            max_seq_len=max_seq_len,
            eager=eager,
        )
        self._batch_size = batch_size
        self._graphs: tuple[BatchedPredictorGraph, BatchedTalkerGraph] | None = None

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def _prepare(self, model: Qwen3TTSModel) -> None:
        """The single-line graphs (``FastEngine``), then the batched ones, captured and warmed
        up with a batch of warm-up lines before the first job."""
        super()._prepare(model)
        if self._batch_size < 2:
            return
        talker = model.model.talker
        config = model.model.config.talker_config
        predictor_class, talker_class = (
            (EagerBatchedPredictorGraph, EagerBatchedTalkerGraph)
            if self._eager
            else (BatchedPredictorGraph, BatchedTalkerGraph)
        )
        device = _indexed(self.device) if self._eager else self.device
        try:
            predictor = predictor_class(
                talker.code_predictor,
                talker.code_predictor.model.config,
                config.hidden_size,
                max_batch_size=self._batch_size,
                device=device,
                dtype=self.dtype,
                **PREDICTOR_SAMPLING,
            )
            talker_graph = talker_class(
                talker.model,
                config,
                max_batch_size=self._batch_size,
                device=device,
                dtype=self.dtype,
                max_seq_len=self._max_seq_len,
            )
            predictor.capture(num_warmup=3)
            talker_graph.capture(prefill_len=min(WARM_UP_PREFILL, self._max_seq_len // 2))
            self._graphs = (predictor, talker_graph)
            assert self._fast is not None  # built by FastEngine._prepare
            line = warm_up_line(model)
            self._batch(self._fast, [line, line], budgets=[WARM_UP_FRAMES, WARM_UP_FRAMES])
        except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
            self._graphs = None
            raise ModelLoadError(
                f"faster-qwen3-tts-batch could not capture its graphs for "
                f"{self.model_source!r} on {self.device}: {exc}. TTS_WORKER__ENGINE=faster "
                "runs without them (one line at a time)."
            ) from exc

    # -- generation -------------------------------------------------------------------------

    def synthesize(self, lines: Sequence[Line], *, max_new_tokens: int) -> list[Waveform]:
        same_voice_kind(lines)
        budgets = [line_budget(line, max_new_tokens=max_new_tokens) for line in lines]
        waves: list[Waveform] = []
        for start in range(0, len(lines), max(1, self._batch_size)):
            part = list(lines[start : start + self._batch_size])
            own = budgets[start : start + self._batch_size]
            if len(part) == 1 or self._graphs is None:
                waves.extend(super().synthesize(part, max_new_tokens=max(own)))
            else:
                waves.extend(self._batch(self.fast, part, budgets=own))
        return waves

    @torch.inference_mode()
    def _batch(
        self, fast: FasterQwen3TTS, lines: Sequence[Line], *, budgets: Sequence[int]
    ) -> list[Waveform]:
        """``lines`` in one batched decode loop, each cut to its own budget; line by line where
        the batch as a whole would not fit the static cache."""
        assert self._graphs is not None
        predictor, talker_graph = self._graphs
        prepared = [_inputs(fast, line) for line in lines]
        longest = max(p[0].shape[1] for p in prepared)
        # Rows are left-padded to the longest prompt and step together: past the cache's end
        # the library stops every row without a word.
        if longest + max(budgets) > self._max_seq_len - 1:
            return [
                _generate(fast, line, max_new_tokens=budget)
                for line, budget in zip(lines, budgets, strict=True)
            ]
        model = fast.model.model
        results = batched_fast_generate(
            talker=model.talker,
            talker_input_embeds_list=[p[0] for p in prepared],
            attention_mask_list=[p[1] for p in prepared],
            trailing_text_hiddens_list=[p[2] for p in prepared],
            tts_pad_embed=prepared[0][3],
            config=model.config.talker_config,
            predictor_graph=predictor,
            talker_graph=talker_graph,
            max_new_tokens=max(budgets),
        )
        waves = []
        for (codes, _timing), (*_, reference), budget in zip(
            results, prepared, budgets, strict=True
        ):
            waves.append(_decode(fast, None if codes is None else codes[:budget], reference))
        return waves


def _inputs(fast: FasterQwen3TTS, line: Line) -> tuple[Any, ...]:
    """What faster-qwen3-tts builds for ``line`` alone (its generate methods' own
    arguments): the prompt's embeddings, mask, trailing text, pad embedding, and the
    reference codes an in-context clone is decoded after."""
    language = model_language(line.language)
    match line.voice:
        case Speaker(name=name, instruct=instruct):
            fast.model._validate_speakers([name])
            if fast.model.model.tts_model_size in "0b6":
                instruct = None  # as faster-qwen3-tts: the 0.6B models take no instruct
            _m, _t, _c, tie, tam, tth, tpe = fast._prepare_generation_custom(
                text=line.text,
                language=language,
                speaker=name,
                instruct=instruct,
                non_streaming_mode=True,
            )
            return tie, tam, tth, tpe, None
        case Design(instruct=instruct):
            _m, _t, _c, tie, tam, tth, tpe = fast._prepare_generation_custom(
                text=line.text,
                language=language,
                speaker=None,
                instruct=instruct,
                non_streaming_mode=True,
            )
            return tie, tam, tth, tpe, None
        case Clone() as clone:
            _m, _t, _c, tie, tam, tth, tpe, reference = fast._prepare_generation(
                text=line.text,
                language=language,
                voice_clone_prompt=[prompt_item(clone)],
                non_streaming_mode=False,
            )
            return tie, tam, tth, tpe, reference


def _decode(
    fast: FasterQwen3TTS, codes: torch.Tensor | None, reference: torch.Tensor | None
) -> Waveform:
    """As faster-qwen3-tts decodes one line: an in-context clone's reference codes go first
    (the decoder's acoustic context), and their share of the audio is cut off."""
    if codes is None:
        return waveform(np.zeros(1, dtype=np.float32), fast.sample_rate)
    context = 0 if reference is None else int(reference.shape[0])
    full = codes if reference is None else torch.cat([reference.to(codes.device), codes])
    audio, rate = fast.model.model.speech_tokenizer.decode({"audio_codes": full.unsqueeze(0)})
    samples = np.concatenate([_flat(a) for a in audio])
    if context:
        samples = samples[int(context / max(full.shape[0], 1) * len(samples)) :]
    return waveform(samples, rate)


def _flat(audio: Any) -> np.ndarray:
    if hasattr(audio, "cpu"):
        return np.asarray(audio.flatten().float().cpu().numpy(), dtype=np.float32)
    return np.asarray(audio, dtype=np.float32).reshape(-1)
