"""The audio checks on real signals made here: each fault long-form TTS is known for is caught
by its own check and by no other, clean speech passes them all, and a job that asks for checks
has a failing chunk said again with the next seed, keeping both attempts in its report."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_worker.audio.ops import JOINT_GAP_S
from gpu_worker.synthesizer import ModelSet, Synthesizer
from gpu_worker.tasks import Task, TaskExecutor
from gpu_worker.verify.checker import Listeners, Verifier, character_error_rate, place_words
from gpu_worker.verify.signal import is_logographic, measure_signal
from shared.domain.audio_formats import AudioFormat
from shared.domain.synthesis import CustomVoiceRequest
from shared.domain.verification import Check, WordTiming
from shared.settings import VerifySettings, VoiceSettings
from tests.support import signals
from tests.support.signals import MemoryIO, SeededEngine

TEXT = "The lighthouse keeper climbed the stairs once more before the storm."
BOUNDS = VerifySettings()


def failed(samples: np.ndarray, text: str = TEXT) -> set[Check]:
    measures = measure_signal(signals.wave_of(samples), text=text, target_lufs=-18.0, bounds=BOUNDS)
    return {m.check for m in measures if not m.passed}


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    return signals.for_text(TEXT, seed=3)


def test_clean_speech_passes_every_signal_check(voice: np.ndarray) -> None:
    assert failed(voice) == set()


def test_a_long_silence_inside_a_chunk_is_caught(voice: np.ndarray) -> None:
    assert failed(signals.with_gap(voice, seconds=2.5)) == {Check.SILENCE}


def test_a_long_silence_before_the_speech_is_caught(voice: np.ndarray) -> None:
    assert Check.SILENCE in failed(np.concatenate([signals.silence(2.0), voice]))


def test_a_silent_chunk_fails_silence_and_loudness() -> None:
    assert {Check.SILENCE, Check.LOUDNESS} <= failed(signals.silence(5.0))


def test_clipping_is_caught(voice: np.ndarray) -> None:
    assert Check.CLIPPING in failed(signals.clipped(voice))


def test_a_repeated_block_of_frames_is_caught(voice: np.ndarray) -> None:
    assert failed(signals.looped(voice, block_s=0.6, times=4)) == {Check.REPETITION}


def test_one_word_said_twice_is_not_a_loop(voice: np.ndarray) -> None:
    assert Check.REPETITION not in failed(signals.looped(voice, block_s=0.3, times=2))


def test_a_chunk_too_short_for_its_text_is_caught(voice: np.ndarray) -> None:
    assert failed(voice[: voice.size // 4]) == {Check.DURATION}


def test_a_chunk_too_long_for_its_text_is_caught() -> None:
    assert Check.DURATION in failed(signals.speech(8.0), text="Yes, indeed.")


def test_chinese_text_is_held_to_its_own_pace() -> None:
    text = "灯塔看守人在暴风雨来临之前又爬了一次楼梯。"
    assert is_logographic(text)
    assert not is_logographic(TEXT)
    # Twenty characters in six seconds is Chinese at a slow pace; for seventeen Latin letters
    # it would be far too slow.
    assert Check.DURATION not in failed(signals.speech(6.0), text=text)
    assert Check.DURATION in failed(signals.speech(6.0), text="Lighthouse keepers.")


def test_a_short_chunk_still_has_a_loudness() -> None:
    measures = measure_signal(
        signals.wave_of(signals.speech(0.2)), text="Hi.", target_lufs=-18.0, bounds=BOUNDS
    )
    loudness = next(m for m in measures if m.check is Check.LOUDNESS)
    assert loudness.value < 20


@pytest.mark.parametrize(
    ("text", "heard", "expected"),
    [
        ("Hello, world!", "hello world", 0.0),
        ("Hello, world!", "HELLO. WORLD", 0.0),
        ("Hello, world!", "", 1.0),
        ("Hello, world!", "hello word", 1 / 11),
        ("你好\uff0c世界\u3002", "你好世界", 1 / 5),
        ("...", "", 0.0),
    ],
)
def test_character_error_rate_is_measured_after_normalisation(
    text: str, heard: str, expected: float
) -> None:
    assert character_error_rate(text, heard) == pytest.approx(expected, abs=1e-6)


def test_placed_words_stay_in_order_inside_their_chunk_and_the_audio() -> None:
    first = (
        WordTiming(word="a", start_s=0.0, end_s=0.5),
        WordTiming(word="b", start_s=0.4, end_s=9),
    )
    second = (WordTiming(word="c", start_s=0.0, end_s=0.3),)
    words = place_words([first, second], starts_s=[0.0, 1.0], scale=0.5, duration_s=1.2)
    assert [w.word for w in words] == ["a", "b", "c"]
    assert [(w.start_s, w.end_s) for w in words] == [(0.0, 0.25), (0.25, 1.0), (1.0, 1.15)]


# -- re-making through the worker's task executor ---------------------------------------------


def executor(engine: SeededEngine, io: MemoryIO, *, attempts: int = 3) -> TaskExecutor:
    synth = Synthesizer(engine=engine, max_new_tokens=2048)
    verifier = Verifier(
        settings=VerifySettings(max_attempts=attempts), listeners=Listeners(encoder=engine)
    )
    return TaskExecutor(
        models=ModelSet([synth]),
        io=io,
        limits=VoiceSettings(),
        max_chunk_chars=80,
        max_join_s=60,
        verifier=verifier,
    )


LONG = (
    "The lighthouse keeper climbed the stairs once more before the storm. "
    "Far below, the waves were already breaking over the rocks."
)


def speech_task(*, seed: int | None, verify: bool = True) -> Task:
    request = CustomVoiceRequest(speaker="ryan", text=LONG, seed=seed, verify=verify)
    return Task(id="j1", owner="alice", request=request, attempt=1)


def test_a_failing_chunk_is_made_again_with_the_next_seed_and_both_attempts_are_reported() -> None:
    engine, io = SeededEngine(bad_seeds={10}), MemoryIO()
    run = executor(engine, io)
    audio = run.execute(speech_task(seed=10)).audio
    assert audio is not None
    assert audio.verification is not None
    report = audio.verification
    first, second = report.chunks
    assert [a.seed for a in first.attempts] == [10, 11]
    assert not first.attempts[0].passed
    assert first.attempts[1].passed
    assert first.kept == 1
    failing = first.attempts[0].measure(Check.DURATION)
    assert failing is not None
    assert not failing.passed
    assert [a.seed for a in second.attempts] == [11]
    assert second.passed
    assert report.passed
    assert report.remade == 1
    assert report.below_threshold == ()
    assert Check.VOICE in report.checks
    # One embedding per attempt: the first chunk's, which the others are held to, only once.
    assert engine.embedded == sum(len(c.attempts) for c in report.chunks)
    # The job's audio is the re-made chunk's: as long as both good chunks and their pause.
    kept = sum(a.attempts[a.kept].duration_s for a in report.chunks)
    assert audio.duration_s == pytest.approx(kept + JOINT_GAP_S, abs=0.01)


def test_when_no_attempt_passes_the_best_is_kept_and_the_job_says_so() -> None:
    engine, io = SeededEngine(always_bad=True), MemoryIO()
    run = executor(engine, io, attempts=2)
    audio = run.execute(speech_task(seed=5)).audio
    assert audio is not None
    assert audio.verification is not None
    report = audio.verification
    assert [len(c.attempts) for c in report.chunks] == [2, 2]
    assert not report.passed
    assert report.below_threshold == (0, 1)


def test_an_unseeded_job_is_re_made_with_seeds_it_records() -> None:
    engine, io = SeededEngine(always_bad=True), MemoryIO()
    run = executor(engine, io, attempts=3)
    audio = run.execute(speech_task(seed=None)).audio
    assert audio is not None
    assert audio.verification is not None
    seeds = [a.seed for a in audio.verification.chunks[0].attempts]
    assert seeds[0] is None
    assert seeds[1] is not None
    assert seeds[2] == seeds[1] + 1


def test_a_job_that_does_not_ask_is_not_checked() -> None:
    engine, io = SeededEngine(bad_seeds={10}), MemoryIO()
    run = executor(engine, io)
    audio = run.execute(speech_task(seed=10, verify=False)).audio
    assert audio is not None
    assert audio.verification is None
    assert audio.words == ()
    assert len(engine.said) == 2


def test_a_streamed_job_is_checked_after_its_last_piece_and_never_re_made() -> None:
    engine, io = SeededEngine(bad_seeds={10}), MemoryIO()
    run = executor(engine, io)
    request = CustomVoiceRequest(
        speaker="ryan", text=LONG, seed=10, verify=True, stream=True, format=AudioFormat.MP3
    )
    audio = run.execute(Task(id="j2", owner="alice", request=request, attempt=1)).audio
    assert audio is not None
    assert audio.verification is not None
    assert [len(c.attempts) for c in audio.verification.chunks] == [1, 1]
    assert audio.verification.below_threshold == (0,)
    assert io.parts
    assert len(engine.said) == 2
