"""Token budgets and lengths without a model: each line of a batch reaches the engine with its
own budget, the accelerated engine stops each line at it, and a worker whose sequence length,
chunk size, prompt cap and reference limit do not fit together refuses to start, naming the
setting to change."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import torch

from gpu_worker import bootstrap as worker_bootstrap
from gpu_worker.audio.encoding import Waveform
from gpu_worker.bootstrap import check_lengths, load_models
from gpu_worker.engine import Line, Speaker, line_budget, token_budget
from gpu_worker.synthesizer import Synthesizer
from shared.domain.backends import ModelFacts
from shared.domain.catalog import Language
from shared.domain.errors import ConfigurationError
from shared.domain.modes import ModelType
from shared.domain.voice_file import PromptItem
from shared.settings import EngineKind, Settings, VoiceSettings, WorkerSettings

RATE = 24_000
FRAME = 1920  # samples per 12.5 Hz codec frame

SHORT = "Hi."
LONG = "A much longer line, which needs many more frames than a greeting does. " * 3


def line(text: str, *, cap: int | None = None) -> Line:
    return Line(
        text=text, language=Language.ENGLISH, voice=Speaker(name="ryan"), max_new_tokens=cap
    )


class RecordingEngine:
    """Says every line as 5 frames; records each call's limit and its lines' own caps."""

    model_source = "fake"
    device = "cpu"
    model_type = ModelType.CUSTOM_VOICE
    facts = ModelFacts(
        model="fake", model_type=ModelType.CUSTOM_VOICE, codebook_size=2048, num_code_groups=16
    )

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int | None]]] = []

    def load(self) -> None: ...

    def check_fits(self, line: Line, *, max_new_tokens: int) -> None: ...

    def synthesize(self, lines: Sequence[Line], *, max_new_tokens: int) -> list[Waveform]:
        self.calls.append((max_new_tokens, [line.max_new_tokens for line in lines]))
        return [Waveform(samples=np.full(5 * FRAME, 0.1, np.float32), sample_rate=RATE)] * len(
            lines
        )

    def stream(self, line: Line, *, max_new_tokens: int) -> Iterator[Waveform]:
        yield from self.synthesize([line], max_new_tokens=max_new_tokens)

    def create_voice_prompt(
        self, *, reference: Waveform, ref_text: str | None, x_vector_only: bool
    ) -> tuple[PromptItem, ...]:
        return ()


# -- budgets ------------------------------------------------------------------------------


def test_each_line_of_a_batch_reaches_the_engine_with_its_own_budget() -> None:
    engine = RecordingEngine()
    results = Synthesizer(engine=engine, max_new_tokens=2048).speak(
        [line(SHORT), line(LONG), line(LONG, cap=7)]
    )
    assert all(isinstance(r, Waveform) for r in results)
    short, long = token_budget(SHORT, cap=2048), token_budget(LONG, cap=2048)
    assert short < long
    # One call; its limit the largest (for a library that takes one), each line its own.
    assert engine.calls == [(long, [short, long, 7])]


def test_line_budget_is_the_lines_own_cap_under_the_calls() -> None:
    assert line_budget(line(SHORT), max_new_tokens=90) == 90
    assert line_budget(line(SHORT, cap=40), max_new_tokens=90) == 40
    assert line_budget(line(SHORT, cap=400), max_new_tokens=90) == 90


class FakeFast:
    """Stands in for ``FasterQwen3TTS``: a prefill of 10 tokens, and 20 frames of audio."""

    def __init__(self) -> None:
        self.budgets: list[int] = []

    def _prepare_generation_custom(self, **_: Any) -> tuple[Any, ...]:
        return (None, None, None, torch.zeros(1, 10, 4))

    def generate_custom_voice(self, *, max_new_tokens: int, **_: Any) -> tuple[list[Any], int]:
        self.budgets.append(max_new_tokens)
        return [np.zeros(min(20, max_new_tokens) * FRAME, np.float32)], RATE


def test_the_faster_engine_stops_each_line_of_a_batch_at_its_own_budget() -> None:
    from gpu_worker.fast_engine import FastEngine

    engine = FastEngine(
        model_source="fake",
        max_prompt_tokens=1100,
        device="cpu",
        stream_frames=8,
        max_seq_len=4096,
        eager=True,
    )
    fast = FakeFast()
    engine._model = object()  # loaded, as far as it knows
    engine._fast = fast
    synth = Synthesizer(engine=engine, max_new_tokens=2048)
    results = synth.speak([line(SHORT), line(LONG)])
    assert all(isinstance(r, Waveform) for r in results)
    # Not the batch's largest for both: a short line that failed to stop would run to it.
    assert fast.budgets == [token_budget(SHORT, cap=2048), token_budget(LONG, cap=2048)]


# -- lengths checked at start ---------------------------------------------------------------


def settings(**worker: Any) -> Settings:
    return Settings(bucket="test-bucket", worker=WorkerSettings(**worker))


def test_the_shipped_settings_fit_together_on_both_engines() -> None:
    for engine in EngineKind:
        check_lengths(settings(engine=engine))


def test_a_sequence_length_too_short_for_the_longest_line_stops_the_worker_before_loading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*_: object, **__: object) -> object:
        raise AssertionError("no engine is built on settings that do not fit")

    monkeypatch.setattr(worker_bootstrap, "build_engine", never)
    with pytest.raises(ConfigurationError, match="TTS_WORKER__MAX_SEQ_LEN=2048") as caught:
        load_models(settings(engine=EngineKind.FASTER, max_seq_len=2048))
    message = caught.value.message
    # It says what would fit, and what else could change.
    assert "at least 2780" in message
    assert "TTS_WORKER__MAX_CHUNK_CHARS" in message
    check_lengths(settings(engine=EngineKind.FASTER, max_seq_len=2780))
    # The baseline grows its cache as it goes: its sequence length is not checked.
    check_lengths(settings(engine=EngineKind.QWEN, max_seq_len=2048))


def test_a_prompt_cap_below_the_longest_reference_stops_the_worker() -> None:
    long_references = Settings(
        bucket="test-bucket",
        voices=VoiceSettings(max_reference_s=120),
        worker=WorkerSettings(engine=EngineKind.QWEN),
    )
    with pytest.raises(ConfigurationError, match="TTS_WORKER__MAX_PROMPT_TOKENS=1100") as caught:
        check_lengths(long_references)
    # 120 s: 1500 frames and 600 tokens of transcript.
    assert "at least 2100" in caught.value.message
    assert "TTS_VOICES__MAX_REFERENCE_S to at most 62.7" in caught.value.message
    check_lengths(
        Settings(
            bucket="test-bucket",
            voices=VoiceSettings(max_reference_s=62.7),
            worker=WorkerSettings(engine=EngineKind.QWEN),
        )
    )
