"""The baseline engine's streamed lines (``gpu_worker/frame_stream.py``) on the tiny models:
pieces heard from qwen-tts's own generation, decoded a few frames at a time.

What must hold: the pieces are the whole line's audio (the same seed, the same frames, the
codec's own decode); a clone's pieces are decoded after its reference codes, as the library
decodes it whole; a stream closed early stops the generation and leaves nothing behind; the
generation's errors reach the caller; and the library's own decode of the whole line is not
run a second time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing

import numpy as np
import pytest

from gpu_worker.engine import Clone, Line, Speaker
from gpu_worker.qwen_engine import QwenEngine
from gpu_worker.synthesizer import Synthesizer
from shared.domain.catalog import Language
from shared.domain.errors import GatewayError
from shared.domain.voice_file import VoicePromptFile
from shared.settings import EngineKind
from tests.support.engines import STREAM_FRAMES, tiny_synthesizer, tone_prompt

LINE = "Hello world, this is one longer sentence to say."


@pytest.fixture(scope="module")
def synths(tiny_models_dir: dict[str, str]) -> dict[str, Synthesizer]:
    built = {
        kind: tiny_synthesizer(tiny_models_dir[kind], kind=EngineKind.QWEN)
        for kind in ("custom_voice", "base")
    }
    for synth in built.values():
        synth.load()
    return built


def engine_of(synth: Synthesizer) -> QwenEngine:
    engine = synth.engine
    assert isinstance(engine, QwenEngine)
    return engine


def speaker(text: str = LINE) -> Line:
    return Line(text=text, language=Language.ENGLISH, voice=Speaker(name="Vivian"))


def joined(pieces: Iterator[object]) -> np.ndarray:
    return np.concatenate([p.samples for p in pieces])  # type: ignore[attr-defined]


def generating() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "qwen-generate"]


@pytest.mark.parametrize("seed", [3, 14])
def test_the_pieces_are_the_whole_lines_audio(synths: dict[str, Synthesizer], seed: int) -> None:
    synth = synths["custom_voice"]
    whole = synth.say(speaker(), seed=seed).samples
    pieces = list(synth.stream(speaker(), seed=seed))
    assert len(pieces) > 1
    streamed = joined(iter(pieces))
    assert len(streamed) == len(whole)
    # Each piece's decode sees the frames before it (the codec's own left context), so the
    # samples agree to float rounding, not by chance.
    np.testing.assert_allclose(streamed, whole, atol=1e-3)


def test_a_clone_is_decoded_after_its_reference_codes(synths: dict[str, Synthesizer]) -> None:
    base = synths["base"]
    item = tone_prompt(base)
    assert item.icl_mode
    assert item.ref_code is not None
    line = Line(
        text=LINE, language=Language.ENGLISH, voice=Clone(prompt=VoicePromptFile(items=(item,)))
    )
    whole = base.say(line, seed=5).samples
    pieces = list(base.stream(line, seed=5))
    assert len(pieces) > 1
    streamed = joined(iter(pieces))
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=1e-3)


def test_closing_early_stops_the_generation_and_removes_the_hooks(
    synths: dict[str, Synthesizer],
) -> None:
    synth = synths["custom_voice"]
    model = engine_of(synth).model.model
    steps = {"n": 0}

    def count(*_: object) -> None:
        steps["n"] += 1

    counter = model.talker.register_forward_hook(count)
    try:
        whole_steps = _steps_of(synth, steps, seed=3, stop_after=None)
        early_steps = _steps_of(synth, steps, seed=3, stop_after=1)
    finally:
        counter.remove()
    assert early_steps < whole_steps
    assert generating() == []
    assert not model.talker._forward_hooks
    assert not model.speech_tokenizer.model.decoder._forward_pre_hooks
    # The engine is free again: the next line streams whole.
    assert len(joined(synth.stream(speaker(), seed=3))) > 0


def _steps_of(
    synth: Synthesizer, steps: dict[str, int], *, seed: int, stop_after: int | None
) -> int:
    steps["n"] = 0
    with closing(synth.stream(speaker(), seed=seed)) as pieces:
        for taken, _ in enumerate(pieces, start=1):
            if taken == stop_after:
                break
    return steps["n"]


def test_the_generations_error_reaches_the_caller(synths: dict[str, Synthesizer]) -> None:
    synth = synths["custom_voice"]
    line = Line(text=LINE, language=Language.ENGLISH, voice=Speaker(name="nobody"))
    with pytest.raises(GatewayError) as raised:
        list(synth.stream(line, seed=1))
    assert not raised.value.retryable
    assert "nobody" in raised.value.message.lower()
    assert generating() == []


def test_the_whole_line_is_decoded_once_piece_by_piece(synths: dict[str, Synthesizer]) -> None:
    """The library would decode the whole line after its last frame; the stream has decoded
    every frame already, so that decode is stopped: one decoder call per piece, no more."""
    synth = synths["custom_voice"]
    decoder = engine_of(synth).model.model.speech_tokenizer.model.decoder
    calls = {"n": 0}

    def count(*_: object) -> None:
        calls["n"] += 1

    counter = decoder.register_forward_hook(count)
    try:
        pieces = list(synth.stream(speaker(), seed=3))
    finally:
        counter.remove()
    assert len(pieces) > 1
    assert calls["n"] == len(pieces)
    assert len(pieces[0].samples) == STREAM_FRAMES * 1920
