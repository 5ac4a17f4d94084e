"""Limits on both engines, on the tiny offline Base model: a voice prompt longer than
``TTS_WORKER__MAX_PROMPT_TOKENS`` (reference frames, or reference text) is refused before it
reaches the model, naming the voice; and the accelerated engine stops each line of a batch at
its own token budget."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gpu_worker import fast_engine
from gpu_worker.audio.encoding import Waveform
from gpu_worker.bootstrap import build_engine
from gpu_worker.engine import Clone, Line, Speaker, token_budget
from gpu_worker.synthesizer import Synthesizer
from shared.domain.catalog import Language
from shared.domain.errors import PromptTooLong
from shared.domain.modes import ModelType
from shared.domain.voice_file import PromptItem, VoicePromptFile
from shared.settings import EngineKind, WithoutCuda, WorkerSettings
from tests.support.engines import ENGINES, STREAM_FRAMES, tone_prompt

LIMIT = 64
"""Prompt tokens the engines under test take: a second of reference (13 frames) and a short
transcript fit; 100 frames do not."""


def synthesizer(source: str, *, kind: EngineKind, max_new_tokens: int = 64) -> Synthesizer:
    settings = WorkerSettings(
        models=(source,),
        device="cpu",
        engine=kind,
        without_cuda=WithoutCuda.EAGER,
        stream_frames=STREAM_FRAMES,
        max_seq_len=1024,
        max_prompt_tokens=LIMIT,
    )
    engine = build_engine(settings, source=source)
    return Synthesizer(engine=engine, max_new_tokens=max_new_tokens)


@pytest.fixture(scope="module", params=ENGINES, ids=[str(k) for k in ENGINES])
def base(request: pytest.FixtureRequest, tiny_models_dir: dict[str, str]) -> Synthesizer:
    synth = synthesizer(tiny_models_dir[ModelType.BASE], kind=EngineKind(request.param))
    synth.load()
    return synth


@pytest.fixture(scope="module")
def made(base: Synthesizer) -> PromptItem:
    """An in-context prompt the model made from a second of a tone: 13 frames and a text."""
    return tone_prompt(base)


def spoken(item: PromptItem, *, voice_id: str | None = "v0000000042", **changes: Any) -> Line:
    changed = PromptItem(**{**item.as_kwargs(), **changes})
    voice = Clone(prompt=VoicePromptFile(items=(changed,)), voice_id=voice_id)
    return Line(text="Hello there.", language=Language.ENGLISH, voice=voice)


def test_a_prompt_within_the_cap_is_spoken(base: Synthesizer, made: PromptItem) -> None:
    wave = base.say(spoken(made))
    assert len(wave.samples) > 0


def test_a_prompt_of_too_many_frames_is_refused_naming_the_voice_before_the_model_sees_it(
    base: Synthesizer, made: PromptItem, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert made.ref_code is not None
    frames = made.ref_code.repeat(8, 1)  # 104 frames of the model's own codes
    calls: list[object] = []
    monkeypatch.setattr(type(base.engine), "synthesize", lambda *a, **k: calls.append(a))
    with pytest.raises(PromptTooLong) as caught:
        base.say(spoken(made, ref_code=frames))
    error = caught.value
    assert "voice v0000000042" in error.message
    assert "104 reference frames" in error.message
    assert "TTS_WORKER__MAX_PROMPT_TOKENS" in error.message
    assert not error.retryable
    assert error.field == "voice"
    assert error.details["voice_id"] == "v0000000042"
    assert error.details["max_prompt_tokens"] == LIMIT
    assert calls == []


def test_a_long_reference_text_counts_its_tokens(base: Synthesizer, made: PromptItem) -> None:
    with pytest.raises(PromptTooLong, match="reference-text tokens") as caught:
        base.say(spoken(made, ref_text="A very long transcript. " * 20, voice_id=None))
    assert "the reference audio makes a prompt of" in caught.value.message
    prompt_tokens = caught.value.details["prompt_tokens"]
    assert isinstance(prompt_tokens, int)
    assert prompt_tokens > LIMIT


def test_faster_stops_each_line_of_a_batch_at_its_own_budget(
    tiny_model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    synth = synthesizer(tiny_model_dir, kind=EngineKind.FASTER, max_new_tokens=2048)
    synth.load()
    budgets: list[int] = []
    generate = fast_engine._generate

    def spy(fast: Any, line: Line, *, max_new_tokens: int) -> Waveform:
        budgets.append(max_new_tokens)
        return generate(fast, line, max_new_tokens=max_new_tokens)

    monkeypatch.setattr(fast_engine, "_generate", spy)
    short, long = "Hi.", "A longer line, with more to say than a greeting has. " * 2
    torch.manual_seed(0)
    lines = [
        Line(text=t, language=Language.ENGLISH, voice=Speaker(name="Vivian")) for t in (short, long)
    ]
    results = synth.speak(lines)
    assert all(isinstance(r, Waveform) for r in results)
    assert budgets == [token_budget(short, cap=2048), token_budget(long, cap=2048)]
    assert budgets[0] < budgets[1]
