"""qwen-tts's own generation, heard frame by frame: a streamed line in pieces of a few codec
frames, not one piece made whole.

qwen-tts has no streaming call, but its talker makes each step's codes (one frame: the first
codebook and the code predictor's others) in its own ``forward`` and returns them with the
step's output. A forward hook reads them as they are made while the library's generate call
runs, unchanged, on a thread of its own; the caller's thread decodes every ``piece_frames`` new
frames with the codec's own ``decode`` and yields them. So the first audio waits for the prompt
and a few frames, not for the whole line, and the frames are exactly those the whole call makes
(the same call, the same draws). Once the generation has made its last frame the library
decodes the whole line; a hook on the codec's decoder stops it there, on the generating thread
only: every frame has been heard, and decoding them again would only delay the last piece.

Each piece is decoded with the frames before it as left context, ``CONTEXT_FRAMES`` of them,
as the codec's own ``chunked_decode`` gives every chunk of a whole line: the 12 Hz decoder is
causal, so a piece's samples are the whole line's up to that context's reach. A clone's first
pieces take their context from its reference codes, as the library decodes a clone after them.

Why by hand: neither qwen-tts nor transformers offers a step callback that sees all the codes
(a transformers streamer sees only the first codebook), and faster-qwen3-tts, which streams,
needs CUDA and its own decode loop. This keeps the library's generation and only listens to it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

CONTEXT_FRAMES = 25
"""The left context each piece is decoded with: the codec's ``chunked_decode`` default."""


class _Closed(Exception):
    """Raised inside the generation, at its next step, once the stream is closed early."""


@dataclass(frozen=True)
class _Ended:
    error: BaseException | None = None


class _Pieces:
    """Decodes consecutive runs of frames, each after the frames before it."""

    def __init__(self, codec: Any, *, context: torch.Tensor | None) -> None:
        self._codec = codec
        self._upsample = int(codec.model.get_decode_upsample_rate())
        self._before = None if context is None else context[-CONTEXT_FRAMES:]

    def decode(self, frames: list[torch.Tensor]) -> tuple[npt.NDArray[np.float32], int]:
        new = torch.stack(frames)
        before = self._before
        window = new if before is None else torch.cat([before.to(new.device), new])
        wavs, rate = self._codec.decode({"audio_codes": window})
        lead = (window.shape[0] - new.shape[0]) * self._upsample
        self._before = window[-CONTEXT_FRAMES:]
        return np.asarray(wavs[0], dtype=np.float32).reshape(-1)[lead:], int(rate)


def stream_frames(
    generate: Callable[[], object],
    *,
    talker: torch.nn.Module,
    codec: Any,
    eos_id: int,
    piece_frames: int,
    context: torch.Tensor | None = None,
) -> Iterator[tuple[npt.NDArray[np.float32], int]]:
    """``generate()`` (one line's library call) heard through ``talker``'s steps: its audio in
    pieces of ``piece_frames`` frames (the last may be shorter), with their sample rate.
    ``context``: codes decoded before the line's own (a clone's reference), or ``None``.

    The generation's errors are raised here. Closing the iterator early stops the generation
    at its next step; either way it has ended, and the hook is gone, when this returns."""
    heard: queue.SimpleQueue[torch.Tensor | _Ended] = queue.SimpleQueue()
    closed = threading.Event()

    def hear(_module: torch.nn.Module, _args: object, output: Any) -> None:
        if closed.is_set():
            raise _Closed
        codes = output.hidden_states[1]  # None on the prefill, a (batch, codebooks) frame after
        if codes is not None:
            heard.put(codes[0].detach())

    def decoding(_module: torch.nn.Module, _args: object) -> None:
        if threading.current_thread() is thread:
            raise _Closed  # the library's own decode of the whole line: every frame is heard

    def run() -> None:
        try:
            with torch.inference_mode():
                generate()
        except _Closed:
            heard.put(_Ended())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, raised there
            heard.put(_Ended(exc))
        else:
            heard.put(_Ended())

    thread = threading.Thread(target=run, name="qwen-generate", daemon=True)
    hooks = (
        talker.register_forward_hook(hear),
        codec.model.decoder.register_forward_pre_hook(decoding),
    )
    try:
        thread.start()
        pieces = _Pieces(codec, context=context)
        pending: list[torch.Tensor] = []
        stopped = False  # the line's end-of-speech frame was heard: later frames are padding
        while not isinstance(item := heard.get(), _Ended):
            if stopped or int(item[0]) == eos_id:
                stopped = True
                continue
            pending.append(item)
            if len(pending) >= piece_frames:
                yield pieces.decode(pending)
                pending = []
        if item.error is not None:
            raise item.error
        if pending:
            yield pieces.decode(pending)
    finally:
        closed.set()
        thread.join()
        for hook in hooks:
            hook.remove()
