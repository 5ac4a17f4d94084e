"""The engine through the real ``Qwen3TTSModel.from_pretrained`` on a tiny offline model."""

from __future__ import annotations

import inspect
import threading

import numpy as np
import pytest

from gpu_worker.engine import QwenEngine, token_budget
from shared.domain.catalog import Language
from shared.domain.errors import ModelLoadError, SynthesisFailed


@pytest.fixture(scope="module")
def engine(tiny_model_dir: str) -> QwenEngine:
    engine = QwenEngine(model_source=tiny_model_dir, device="cpu", max_new_tokens=2048)
    engine.load()
    return engine


def test_custom_voice_produces_24khz_float_audio(engine: QwenEngine) -> None:
    wave = engine.generate_custom_voice(
        text="Hello world.", speaker="Vivian", language=Language.ENGLISH, instruct="calm"
    )
    assert wave.sample_rate == 24000
    assert wave.samples.dtype == np.float32
    assert wave.samples.ndim == 1
    assert len(wave.samples) > 0
    assert float(np.abs(wave.samples).max()) > 0.01  # noise, but not silence
    assert wave.duration_s == len(wave.samples) / 24000


def test_a_custom_voice_model_offers_only_its_mode(engine: QwenEngine) -> None:
    assert engine.model_type == "custom_voice"
    assert engine.modes == ("custom_voice",)


def test_every_engine_method_takes_keyword_arguments_only() -> None:
    """Positional calls would let text and reference audio be swapped silently."""
    for name in ("generate_custom_voice",):
        parameters = list(inspect.signature(getattr(QwenEngine, name)).parameters.values())[1:]
        assert parameters
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters), name
    init = list(inspect.signature(QwenEngine.__init__).parameters.values())[1:]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in init)


def test_a_positional_call_is_a_type_error(engine: QwenEngine) -> None:
    with pytest.raises(TypeError):
        engine.generate_custom_voice("Hello", "Vivian", Language.ENGLISH)  # type: ignore[misc]


def test_concurrent_loads_build_one_model(tiny_model_dir: str) -> None:
    """Review 4.3: two early requests must not both load the model."""
    engine = QwenEngine(model_source=tiny_model_dir, device="cpu", max_new_tokens=64)
    barrier = threading.Barrier(4)
    seen: list[object] = []

    def load() -> None:
        barrier.wait()
        engine.load()
        seen.append(engine.model)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 4
    assert all(model is seen[0] for model in seen)


def test_a_speaker_the_model_lacks_is_a_permanent_failure(engine: QwenEngine) -> None:
    with pytest.raises(SynthesisFailed, match="rejected"):
        engine.generate_custom_voice(text="Hi", speaker="nobody", language=Language.AUTO)


def test_an_unloadable_model_names_the_setting(tmp_path: object) -> None:
    engine = QwenEngine(model_source=str(tmp_path), device="cpu", max_new_tokens=64)
    with pytest.raises(ModelLoadError, match="TTS_WORKER__MODEL"):
        engine.load()


def test_token_budget_grows_with_text_and_respects_the_cap() -> None:
    short, long = token_budget("Hi.", cap=2048), token_budget("word " * 200, cap=2048)
    assert 0 < short < 100 < long <= 2048
    assert token_budget("x" * 100_000, cap=2048) == 2048
