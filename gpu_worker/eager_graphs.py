"""faster-qwen3-tts's two CUDA-graph classes, replayed eagerly: its decode loop without CUDA.

``TalkerGraph`` and ``PredictorGraph`` capture one decode step into a ``torch.cuda.CUDAGraph``
and ``replay()`` it. Here ``capture`` prepares the same static KV caches and attention-mask
tables but records nothing, and ``replay()`` runs the very step the graph would hold. Everything
else is the library's own code: prefill, copying the KV cache into the static cache, the mask
table, rope deltas, sampling, repetition penalty, streaming decode with its sliding window.

This is ``TTS_WORKER__WITHOUT_CUDA=eager``: for tests and development on a CPU. It is slower
than the baseline engine (static caches of ``max_seq_len`` on every step), never a way to serve.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import torch
from faster_qwen3_tts.predictor_graph import PredictorGraph
from faster_qwen3_tts.talker_graph import TalkerGraph
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

log = logging.getLogger(__name__)

_patch_lock = threading.Lock()


class _Replay:
    """Stands where a ``torch.cuda.CUDAGraph`` would: ``replay()`` runs the step."""

    def __init__(self, step: Callable[[], object]) -> None:
        self._step = step

    def replay(self) -> None:
        self._step()


class _Masks:
    """A mask table filled on first use of each position."""

    def __init__(self, build: Callable[[int], Any]) -> None:
        self._build = build
        self._made: dict[int, Any] = {}

    def __getitem__(self, position: int) -> Any:
        if position not in self._made:
            self._made[position] = self._build(position)
        return self._made[position]


class EagerTalkerGraph(TalkerGraph):  # type: ignore[misc]
    attn_mask: Any

    def __init__(
        self,
        talker_model: Any,
        talker_config: Any,
        *,
        device: str,
        dtype: torch.dtype,
        max_seq_len: int,
    ) -> None:
        super().__init__(
            talker_model,
            talker_config,
            device=_indexed(device),
            dtype=dtype,
            max_seq_len=max_seq_len,
        )

    @torch.inference_mode()
    def capture(self, prefill_len: int = 100, num_warmup: int = 3) -> None:
        self._init_cache_layers()
        self._build_attention_masks()
        self.graph = _Replay(self._decode_step)
        self.captured = True

    def _build_attention_masks(self, attention_mask: torch.Tensor | None = None) -> None:
        """The library fills a table of one mask per position up front, so that a captured
        graph can copy from it; on a CPU that is seconds per thousand positions, paid again at
        each new padding. Eagerly only the positions a generation reaches are needed: the same
        masks, from the same function, made on first use."""
        dummy = torch.zeros(1, 1, self.hidden_size, dtype=self.dtype, device=self.device)
        config = self.model.config
        mask_fn = (
            create_causal_mask
            if config.sliding_window is None
            else create_sliding_window_causal_mask
        )

        def build(position: int) -> Any:
            return mask_fn(
                config=config,
                input_embeds=dummy,
                attention_mask=attention_mask,
                cache_position=torch.tensor([position], device=self.device),
                past_key_values=self.static_cache,
            )

        self.attn_mask_table = _Masks(build)
        if self.attn_mask is None:
            self.attn_mask = self.attn_mask_table[0].clone()
        else:
            self.attn_mask.copy_(self.attn_mask_table[0])


class EagerPredictorGraph(PredictorGraph):  # type: ignore[misc]
    def __init__(
        self,
        code_predictor: Any,
        pred_config: Any,
        talker_hidden_size: int,
        *,
        device: str,
        dtype: torch.dtype,
        **sampling: Any,
    ) -> None:
        super().__init__(
            code_predictor,
            pred_config,
            talker_hidden_size,
            device=_indexed(device),
            dtype=dtype,
            **sampling,
        )

    @torch.inference_mode()
    def capture(self, num_warmup: int = 3) -> None:
        self._init_cache_layers()
        self._build_attention_masks()
        self.graph = _Replay(self._full_loop)
        self.captured = True


def without_cuda_synchronize() -> None:
    """The library's decode loops call ``torch.cuda.synchronize()`` unguarded, which raises
    where CUDA is absent. There it can synchronise nothing, so it becomes a no-op, process-wide
    (a scoped swap would race between threads); with CUDA present nothing changes."""
    if torch.cuda.is_available():
        return
    with _patch_lock:
        if getattr(torch.cuda.synchronize, "_no_cuda", False):
            return

        def synchronize(device: object = None) -> None:
            """Nothing to wait for: there is no CUDA device."""

        synchronize._no_cuda = True  # type: ignore[attr-defined]
        torch.cuda.synchronize = synchronize
        log.warning("no CUDA: torch.cuda.synchronize is a no-op in this process (eager graphs)")


def _indexed(device: str) -> str:
    """The graph classes ask CUDA for its current device when the device string has no index
    (``"cpu"``); an explicit index (``"cpu:0"``) keeps them off CUDA."""
    parsed = torch.device(device)
    return device if parsed.index is not None else f"{parsed.type}:0"
