"""The tiny offline models stop on their own: sampled EOS, well before ``max_new_tokens``.

The gateway treats a generation that runs to its token cap as a runaway, so every tiny model
type must end its noise after a few frames, for every generate method, under any seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

FRAME_RATE = 12.5
CAP = 50
RUNS = 20

Generate = Callable[[Any, int], tuple[list[np.ndarray], int]]


def _ref_audio() -> tuple[np.ndarray, int]:
    wave = np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1
    return wave, 24000


def _custom_voice(model: Any, seed: int) -> tuple[list[np.ndarray], int]:
    language, speaker = ("English", "vivian") if seed % 2 else ("Auto", "eric")
    return model.generate_custom_voice(  # type: ignore[no-any-return]
        text="Hello there, this is a short test.",
        speaker=speaker,
        language=language,
        max_new_tokens=CAP,
    )


def _voice_design(model: Any, seed: int) -> tuple[list[np.ndarray], int]:
    return model.generate_voice_design(  # type: ignore[no-any-return]
        text="Hello there, this is a short test.",
        instruct="a calm, low voice",
        language="English",
        max_new_tokens=CAP,
    )


def _voice_clone(model: Any, seed: int) -> tuple[list[np.ndarray], int]:
    """Even seeds clone in-context (reference codes and text), odd ones from the x-vector only."""
    if seed % 2:
        return model.generate_voice_clone(  # type: ignore[no-any-return]
            text="Hello there.",
            language="English",
            ref_audio=_ref_audio(),
            x_vector_only_mode=True,
            max_new_tokens=CAP,
        )
    return model.generate_voice_clone(  # type: ignore[no-any-return]
        text="Hello there.",
        language="English",
        ref_audio=_ref_audio(),
        ref_text="A reference line.",
        max_new_tokens=CAP,
    )


_GENERATE: dict[str, Generate] = {
    "custom_voice": _custom_voice,
    "voice_design": _voice_design,
    "base": _voice_clone,
}


@pytest.fixture(scope="module")
def loaded(tiny_models_dir: dict[str, str]) -> Callable[[str], Any]:
    from qwen_tts import Qwen3TTSModel

    cache: dict[str, Any] = {}

    def load(model_type: str) -> Any:
        if model_type not in cache:
            cache[model_type] = Qwen3TTSModel.from_pretrained(
                tiny_models_dir[model_type], device_map="cpu"
            )
        return cache[model_type]

    return load


@pytest.mark.parametrize("model_type", sorted(_GENERATE))
def test_every_seed_stops_well_before_the_cap(
    loaded: Callable[[str], Any], model_type: str
) -> None:
    model, generate = loaded(model_type), _GENERATE[model_type]
    frames, audible = [], 0
    for seed in range(RUNS):
        torch.manual_seed(seed)
        wavs, sample_rate = generate(model, seed)
        wave = wavs[0]
        assert len(wave) > 0, seed
        assert np.isfinite(wave).all(), seed
        frames.append(len(wave) / sample_rate * FRAME_RATE)
        audible += float(np.std(wave)) > 1e-3
    assert max(frames) < CAP, frames
    assert float(np.median(frames)) < 20, frames
    assert audible >= RUNS - 2


def test_a_seed_fixes_the_audio_and_another_changes_it(loaded: Callable[[str], Any]) -> None:
    model = loaded("custom_voice")

    def run(seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        return _custom_voice(model, 1)[0][0]

    first, again, other = run(7), run(7), run(8)
    np.testing.assert_array_equal(first, again)
    assert first.shape != other.shape or not np.array_equal(first, other)


def test_a_speaking_model_says_longer_lines_still_inside_the_budget(
    tmp_path: Path, loaded: Callable[[str], Any]
) -> None:
    """``SPEAKING_EOS_LOGIT`` (the benchmarks' model) ends lines later, nearer speech's length,
    and still far inside a short line's token budget; it is its own build, not the default's."""
    from qwen_tts import Qwen3TTSModel

    from gpu_worker.tiny_model import SPEAKING_EOS_LOGIT, build_tiny_model

    speaking = Qwen3TTSModel.from_pretrained(
        str(build_tiny_model(tmp_path / "speaking", eos_logit=SPEAKING_EOS_LOGIT)),
        device_map="cpu",
    )

    def frames(model: Any) -> list[float]:
        lengths = []
        for seed in range(RUNS):
            torch.manual_seed(seed)
            wavs, rate = model.generate_custom_voice(
                text="Hello there, this is a short test.", speaker="vivian", max_new_tokens=240
            )
            lengths.append(len(wavs[0]) / rate * FRAME_RATE)
        return lengths

    default, longer = frames(loaded("custom_voice")), frames(speaking)
    assert float(np.median(longer)) >= 1.5 * float(np.median(default)), (default, longer)
    assert max(longer) < 240, longer
