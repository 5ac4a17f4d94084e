"""The third engine, faster-qwen3-tts-batch, on the tiny offline models: several lines in one
batched decode loop (its graphs replayed eagerly: no CUDA here), for every kind of voice, each
line cut to its own budget; a batch too long for the static cache as a whole is said line by
line, never cut short; lines alone, streams and seeds are ``FastEngine``'s."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from faster_qwen3_tts_batch import batched_generate

from gpu_worker import batched_engine
from gpu_worker.audio.encoding import Waveform
from gpu_worker.batched_engine import BatchedEngine
from gpu_worker.bootstrap import build_engine, check_lengths
from gpu_worker.engine import Clone, Design, Line, Speaker, engine_info, token_budget
from gpu_worker.synthesizer import Synthesizer
from shared.domain.backends import EngineInfo
from shared.domain.catalog import Language
from shared.domain.errors import ConfigurationError, SynthesisFailed
from shared.domain.modes import ModelType
from shared.domain.voice_file import VoicePromptFile
from shared.settings import EngineKind, Settings, WithoutCuda, WorkerSettings
from tests.support.engines import STREAM_FRAMES

BATCH = 3


def batched(source: str, *, max_seq_len: int = 1024, max_new_tokens: int = 256) -> Synthesizer:
    settings = WorkerSettings(
        models=(source,),
        device="cpu",
        engine=EngineKind.BATCHED,
        without_cuda=WithoutCuda.EAGER,
        stream_frames=STREAM_FRAMES,
        max_seq_len=max_seq_len,
        batch_size=BATCH,
    )
    return Synthesizer(
        engine=build_engine(settings, source=source),
        max_new_tokens=max_new_tokens,
        batch_size=BATCH,
    )


@pytest.fixture(scope="module")
def synths(tiny_models_dir: dict[str, str]) -> dict[str, Synthesizer]:
    built = {t: batched(source) for t, source in tiny_models_dir.items()}
    for synth in built.values():
        synth.load()
    return built


class Spy:
    """Records each batched decode loop's row count and ``max_new_tokens``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, int]] = []
        real = batched_generate.batched_fast_generate

        def spy(**kwargs: Any) -> Any:
            self.calls.append((len(kwargs["talker_input_embeds_list"]), kwargs["max_new_tokens"]))
            return real(**kwargs)

        monkeypatch.setattr(batched_engine, "batched_fast_generate", spy)


def audible(wave: object) -> bool:
    assert isinstance(wave, Waveform), wave
    samples = wave.samples
    return bool(np.isfinite(samples).all()) and float(np.abs(samples).max()) > 0.01


def say(text: str, voice: Speaker | Design | Clone, cap: int | None = None) -> Line:
    return Line(text=text, language=Language.ENGLISH, voice=voice, max_new_tokens=cap)


def test_the_setting_picks_the_batched_engine_and_the_heartbeat_names_it(
    synths: dict[str, Synthesizer],
) -> None:
    engine = synths["custom_voice"].engine
    assert type(engine) is BatchedEngine
    assert engine.batch_size == BATCH
    assert engine_info(engine) == EngineInfo(
        name="batched", library="faster-qwen3-tts-batch", version="0.2.0"
    )


def test_a_batch_of_speaker_lines_is_one_decode_loop(
    synths: dict[str, Synthesizer], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    texts = ("Hello.", "A second, longer line to say.", "Third.")
    lines = [
        say(t, Speaker(name="Vivian", instruct="calm" if i else None)) for i, t in enumerate(texts)
    ]
    results = synths["custom_voice"].speak(lines)
    assert all(audible(r) for r in results)
    # One loop for the three, its limit the largest budget (the library takes one).
    assert spy.calls == [(3, max(token_budget(t, cap=256) for t in texts))]


def test_designed_and_cloned_voices_batch_too(
    synths: dict[str, Synthesizer], monkeypatch: pytest.MonkeyPatch
) -> None:
    design = synths["voice_design"]
    spy = Spy(monkeypatch)
    designed = design.speak(
        [
            say("Ahoy.", Design(instruct="a gravelly old sailor")),
            say("Land!", Design(instruct="a child")),
        ]
    )
    assert all(audible(r) for r in designed)
    reference = designed[0]
    assert isinstance(reference, Waveform)
    base = synths["base"]
    icl = VoicePromptFile(
        items=base.create_voice_prompt(reference=reference, ref_text="Ahoy.", x_vector_only=False)
    )
    xvec = VoicePromptFile(
        items=base.create_voice_prompt(reference=reference, ref_text=None, x_vector_only=True)
    )
    cloned = base.speak(
        [
            say("Hello there.", Clone(prompt=icl, voice_id="v1")),
            say("And hello again.", Clone(prompt=xvec, voice_id="v2")),
        ]
    )
    assert all(audible(r) for r in cloned)
    assert [rows for rows, _ in spy.calls] == [2, 2]


def test_each_line_is_cut_to_its_own_budget(
    synths: dict[str, Synthesizer], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    capped, free = synths["custom_voice"].speak(
        [
            say("Hello there, friend.", Speaker(name="Vivian"), cap=2),
            say("Hi.", Speaker(name="Vivian")),
        ]
    )
    assert isinstance(capped, Waveform)
    assert isinstance(free, Waveform)
    assert capped.duration_s <= 2 / 12.5 + 1e-6
    assert spy.calls == [(2, token_budget("Hi.", cap=256))]


def test_a_batch_too_long_for_the_cache_as_a_whole_is_said_line_by_line(
    tiny_model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each line fits alone; together, the longest prompt plus the largest budget do not."""
    synth = batched(tiny_model_dir, max_seq_len=160, max_new_tokens=150)
    synth.load()
    spy = Spy(monkeypatch)
    long_text = "A line whose prompt is long enough to matter here, in words. " * 2
    short, long = synth.speak(
        [say("Hi.", Speaker(name="Vivian")), say(long_text, Speaker(name="Vivian"), cap=10)]
    )
    assert audible(short)
    assert audible(long)
    assert spy.calls == []  # no batched loop: it would have stopped both rows early


def test_a_line_alone_streams_and_seeds_as_the_faster_engine(
    synths: dict[str, Synthesizer],
) -> None:
    synth = synths["custom_voice"]
    line = say("Hello world, one longer sentence.", Speaker(name="Vivian"))
    pieces = list(synth.stream(line, seed=3))
    assert len(pieces) > 1
    first = synth.say(line, seed=5)
    assert np.array_equal(synth.say(line, seed=5).samples, first.samples)


def test_a_bad_line_fails_alone(synths: dict[str, Synthesizer]) -> None:
    good, bad = synths["custom_voice"].speak(
        [say("Hello.", Speaker(name="Vivian")), say("Hello.", Speaker(name="nobody"))]
    )
    assert audible(good)
    assert isinstance(bad, SynthesisFailed)


def test_its_sequence_length_is_checked_at_start() -> None:
    settings = Settings(
        bucket="test-bucket", worker=WorkerSettings(engine=EngineKind.BATCHED, max_seq_len=2048)
    )
    with pytest.raises(ConfigurationError, match="TTS_WORKER__MAX_SEQ_LEN=2048"):
        check_lengths(settings)
    check_lengths(Settings(bucket="test-bucket", worker=WorkerSettings(engine=EngineKind.BATCHED)))


def test_model_types_load(synths: dict[str, Synthesizer]) -> None:
    assert {s.model_type for s in synths.values()} == set(ModelType)
