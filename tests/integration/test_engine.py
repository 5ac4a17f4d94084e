"""The engine contract, run against both engines on the tiny offline models.

Every test here runs twice: on the qwen-tts baseline and on faster-qwen3-tts. The accelerated
engine runs its own decode loop (prefill, static KV cache, sampling, streaming decode) with
its CUDA graphs replayed eagerly: there is no CUDA here.
"""

from __future__ import annotations

import inspect
import threading
import time

import numpy as np
import pytest

from gpu_worker.bootstrap import build_engine
from gpu_worker.engine import Design, Line, Speaker, token_budget
from gpu_worker.fast_engine import FastEngine
from gpu_worker.qwen_engine import QwenEngine
from gpu_worker.synthesizer import Synthesizer
from shared.domain.catalog import Language
from shared.domain.errors import (
    ConfigurationError,
    GatewayError,
    ModelLoadError,
    PromptTooLong,
    SynthesisFailed,
    SynthesisRunaway,
)
from shared.domain.voice_file import VoicePromptFile
from shared.settings import EngineKind, WithoutCuda, WorkerSettings
from tests.support.engines import ENGINES, STREAM_FRAMES, tiny_synthesizer


@pytest.fixture(scope="module", params=ENGINES, ids=[str(k) for k in ENGINES])
def kind(request: pytest.FixtureRequest) -> EngineKind:
    return EngineKind(request.param)


@pytest.fixture(scope="module")
def synths(kind: EngineKind, tiny_models_dir: dict[str, str]) -> dict[str, Synthesizer]:
    """One loaded synthesizer per model type, on the engine under test."""
    built = {t: tiny_synthesizer(source, kind=kind) for t, source in tiny_models_dir.items()}
    for synth in built.values():
        synth.load()
    return built


@pytest.fixture(scope="module")
def synth(synths: dict[str, Synthesizer]) -> Synthesizer:
    return synths["custom_voice"]


def hello(text: str = "Hello world.", **voice: str) -> Line:
    return Line(text=text, language=Language.ENGLISH, voice=Speaker(name="Vivian", **voice))


def audible(wave_samples: np.ndarray) -> bool:
    return bool(np.isfinite(wave_samples).all()) and float(np.abs(wave_samples).max()) > 0.01


def test_the_setting_picks_the_engine(kind: EngineKind, synth: Synthesizer) -> None:
    expected = FastEngine if kind is EngineKind.FASTER else QwenEngine
    assert type(synth.engine) is expected


def test_custom_voice_produces_24khz_float_audio(synth: Synthesizer) -> None:
    wave = synth.generate_custom_voice(
        text="Hello world.", speaker="Vivian", language=Language.ENGLISH, instruct="calm"
    )
    assert wave.sample_rate == 24000
    assert wave.samples.dtype == np.float32
    assert wave.samples.ndim == 1
    assert len(wave.samples) > 0
    assert audible(wave.samples)  # noise, but not silence
    assert wave.duration_s == len(wave.samples) / 24000


def test_every_model_type_speaks(synths: dict[str, Synthesizer]) -> None:
    design = synths["voice_design"].generate_voice_design(
        text="Ahoy.", instruct="a gravelly old sailor", language=Language.ENGLISH, seed=1
    )
    assert audible(design.samples)
    base = synths["base"]
    for x_vector_only, ref_text in ((True, None), (False, "Ahoy.")):
        items = base.create_voice_prompt(
            reference=design, ref_text=ref_text, x_vector_only=x_vector_only
        )
        cloned = base.generate_from_prompt(
            text="Hello there.",
            language=Language.ENGLISH,
            prompt=VoicePromptFile(items=items),
            seed=2,
        )
        assert audible(cloned.samples), x_vector_only


def test_a_model_offers_only_its_modes(synth: Synthesizer) -> None:
    assert synth.model_type == "custom_voice"
    assert synth.modes == ("custom_voice",)


def test_every_engine_method_takes_keyword_arguments_only() -> None:
    """Positional calls would let text and reference audio be swapped silently."""
    for owner in (Synthesizer, QwenEngine, FastEngine):
        for name, method in inspect.getmembers(owner, inspect.isfunction):
            if name.startswith(("generate_", "create_", "__init__")):
                parameters = list(inspect.signature(method).parameters.values())[1:]
                assert parameters, name
                assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters), name


def test_a_positional_call_is_a_type_error(synth: Synthesizer) -> None:
    with pytest.raises(TypeError):
        synth.generate_custom_voice("Hello", "Vivian", Language.ENGLISH)  # type: ignore[misc]


def test_concurrent_loads_build_one_model(kind: EngineKind, tiny_model_dir: str) -> None:
    """Review 4.3: two early requests must not both load the model."""
    synth = tiny_synthesizer(tiny_model_dir, kind=kind, max_new_tokens=64)
    engine = synth.engine
    assert isinstance(engine, QwenEngine)
    barrier = threading.Barrier(4)
    seen: list[object] = []

    def load() -> None:
        barrier.wait()
        synth.load()
        seen.append(engine.model)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 4
    assert all(model is seen[0] for model in seen)


def test_a_speaker_the_model_lacks_is_a_permanent_failure(synth: Synthesizer) -> None:
    with pytest.raises(SynthesisFailed, match="rejected"):
        synth.generate_custom_voice(text="Hi", speaker="nobody", language=Language.AUTO)


def test_an_unloadable_model_names_the_setting(kind: EngineKind, tmp_path: object) -> None:
    synth = tiny_synthesizer(str(tmp_path), kind=kind, max_new_tokens=64)
    with pytest.raises(ModelLoadError, match="TTS_WORKER__MODELS"):
        synth.load()


def test_a_seed_makes_the_audio_repeatable(synth: Synthesizer) -> None:
    first, again, other = (synth.say(hello(), seed=s) for s in (7, 7, 8))
    assert np.array_equal(first.samples, again.samples)
    assert not np.array_equal(first.samples[: len(other.samples)], other.samples)


def test_a_seed_holds_while_another_model_generates_beside_it(
    synths: dict[str, Synthesizer],
) -> None:
    """Each model has its own lock, but the random generator is the process's: another model's
    unseeded draws must not fall between a seed and its samples (said whole, and streamed)."""
    seeded, other = synths["custom_voice"], synths["voice_design"]
    line = hello("A seeded line, said while another model speaks.")
    said = seeded.say(line, seed=21).samples
    streamed = np.concatenate([p.samples for p in seeded.stream(line, seed=22)])
    stop = threading.Event()
    beside = [0]

    def speak_beside() -> None:
        while not stop.is_set():
            other.generate_voice_design(
                text="Another model, unseeded.", instruct="A quick voice.", language=Language.AUTO
            )
            beside[0] += 1

    thread = threading.Thread(target=speak_beside, daemon=True)
    thread.start()
    try:
        while beside[0] == 0:  # the other model is under way before the seeded lines start
            time.sleep(0.05)
        for _ in range(4):
            assert np.array_equal(seeded.say(line, seed=21).samples, said)
            again = np.concatenate([p.samples for p in seeded.stream(line, seed=22)])
            assert np.array_equal(again, streamed)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert beside[0] > 1  # the other model did speak meanwhile, not only before or after


def test_streamed_pieces_join_to_a_valid_waveform(kind: EngineKind, synth: Synthesizer) -> None:
    line = hello("Hello world, this is one longer sentence to say.")
    pieces = list(synth.stream(line, seed=3))
    joined = np.concatenate([p.samples for p in pieces])
    assert {p.sample_rate for p in pieces} == {24000}
    assert joined.dtype == np.float32
    assert audible(joined)
    # A piece every STREAM_FRAMES codec frames (1920 samples each), not one per line: the
    # accelerated engine by its own loop, the baseline by hearing the library's steps.
    assert len(pieces) > 1
    assert all(len(p.samples) == STREAM_FRAMES * 1920 for p in pieces[:-1])


def test_a_batch_gives_each_line_its_own_audio_and_its_own_failure(synth: Synthesizer) -> None:
    lines = [
        hello("The first line."),
        Line(text="Nobody speaks.", language=Language.ENGLISH, voice=Speaker(name="nobody")),
        hello("A third line, rather longer than the first."),
    ]
    first, bad, third = synth.speak(lines)
    assert isinstance(bad, SynthesisFailed)
    assert not isinstance(first, GatewayError)
    assert not isinstance(third, GatewayError)
    assert audible(first.samples)
    assert audible(third.samples)


def test_a_batch_holds_one_kind_of_voice(synths: dict[str, Synthesizer]) -> None:
    design = synths["voice_design"]
    lines = [
        Line(text=t, language=Language.ENGLISH, voice=Design(instruct=d))
        for t, d in (("Ahoy.", "a sailor"), ("Good day.", "a butler"))
    ]
    results = design.speak(lines)
    assert all(not isinstance(r, GatewayError) and audible(r.samples) for r in results)
    with pytest.raises(ValueError, match="one kind of voice"):
        design.engine.synthesize([lines[0], hello()], max_new_tokens=10)


def test_a_runaway_generation_fails_instead_of_returning_noise(
    kind: EngineKind, tiny_model_dir: str
) -> None:
    # A budget of two frames for this text: any real output reaches it.
    synth = tiny_synthesizer(tiny_model_dir, kind=kind, max_new_tokens=2)
    with pytest.raises(SynthesisRunaway, match="did not stop"):
        synth.say(hello("Hello."), seed=1)


def test_a_callers_own_cap_cuts_the_audio_without_failing(synth: Synthesizer) -> None:
    line = Line(
        text="Hello world.", language=Language.ENGLISH, voice=Speaker(name="Vivian"),
        max_new_tokens=2,
    )  # fmt: skip
    wave = synth.say(line, seed=1)
    assert 0 < wave.duration_s <= 2 / 12.5


def test_a_prompt_that_overflows_the_sequence_length_is_refused_before_generating(
    kind: EngineKind, tiny_model_dir: str
) -> None:
    synth = tiny_synthesizer(tiny_model_dir, kind=kind, max_new_tokens=64, max_seq_len=64)
    line = hello("A sentence whose prompt and budget cannot both fit sixty-four tokens.")
    if kind is EngineKind.QWEN:
        assert synth.say(line, seed=1).duration_s > 0  # a dynamic cache has no such limit
        return
    with pytest.raises(PromptTooLong, match="TTS_WORKER__MAX_SEQ_LEN") as caught:
        synth.say(line, seed=1)
    assert caught.value.details["max_seq_len"] == 64
    assert caught.value.code == "prompt_too_long"


def test_without_cuda_the_accelerated_engine_fails_or_falls_back_as_configured(
    tiny_model_dir: str,
) -> None:
    def built(policy: WithoutCuda) -> object:
        settings = WorkerSettings(engine=EngineKind.FASTER, without_cuda=policy, device="cpu")
        return build_engine(settings, source=tiny_model_dir)

    with pytest.raises(ConfigurationError, match="TTS_WORKER__WITHOUT_CUDA"):
        built(WithoutCuda.FAIL)
    assert type(built(WithoutCuda.BASELINE)) is QwenEngine
    assert type(built(WithoutCuda.EAGER)) is FastEngine


def test_token_budget_grows_with_text_and_respects_the_cap() -> None:
    short, long = token_budget("Hi.", cap=2048), token_budget("word " * 200, cap=2048)
    assert 0 < short < 100 < long <= 2048
    assert token_budget("x" * 100_000, cap=2048) == 2048
