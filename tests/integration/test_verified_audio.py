"""A job that asks for checks, through the worker's own code on tiny models built offline: the
TTS model speaks, qwen-asr's Qwen3-ASR transcribes each chunk and its forced aligner times the
words, the Base model's speaker encoder compares the voices, and the report and word timings
come back on the result. The models are noise, so the tests hold the plumbing to account: every
check ran on every attempt, the words are the text's, in order, inside the audio.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_worker.bootstrap import load_verifier
from gpu_worker.qwen_engine import QwenEngine
from gpu_worker.synthesizer import ModelSet, Synthesizer
from gpu_worker.tasks import Task, TaskExecutor
from gpu_worker.tiny_asr import TinyListener
from shared.domain.catalog import Language
from shared.domain.synthesis import CustomVoiceRequest
from shared.domain.verification import Check
from shared.settings import Settings, VerifySettings, WorkerSettings
from tests.support.signals import MemoryIO

TEXT = "Rain fell on the harbour. The boats rocked slowly at their moorings."


@pytest.fixture(scope="module")
def executor(
    tiny_models_dir: dict[str, str], tiny_listeners_dir: dict[TinyListener, Path]
) -> TaskExecutor:
    models = ModelSet(
        [
            Synthesizer(
                engine=QwenEngine(
                    model_source=tiny_models_dir[kind], max_prompt_tokens=1100, device="cpu"
                ),
                max_new_tokens=64,
            )
            for kind in ("custom_voice", "base")
        ]
    )
    verify = VerifySettings(
        max_attempts=2,
        asr_model=str(tiny_listeners_dir[TinyListener.ASR]),
        aligner_model=str(tiny_listeners_dir[TinyListener.ALIGNER]),
    )
    settings = Settings(worker=WorkerSettings(verify=verify))
    return TaskExecutor(
        models=models,
        io=MemoryIO(),
        limits=settings.voices,
        max_chunk_chars=50,
        max_join_s=60,
        verifier=load_verifier(settings, models),
    )


def test_every_check_runs_on_every_attempt_and_the_words_come_back_in_order(
    executor: TaskExecutor,
) -> None:
    request = CustomVoiceRequest(
        text=TEXT, speaker="ryan", language=Language.ENGLISH, seed=7, verify=True
    )
    audio = executor.execute(Task(id="j1", owner="alice", request=request, attempt=1)).audio
    assert audio is not None
    report = audio.verification
    assert report is not None
    assert set(report.checks) == set(Check)
    assert len(report.chunks) == 2
    for chunk in report.chunks:
        for attempt in chunk.attempts:
            assert {m.check for m in attempt.measures} == set(Check)
            assert attempt.transcript is not None
        # The tiny ASR hears random bytes: every chunk fails intelligibility, so each is said
        # again once (max_attempts=2) with the next seed, and the better attempt is kept.
        assert [a.seed for a in chunk.attempts] == [7 + chunk.index, 8 + chunk.index]
    words = [w.word for w in audio.words]
    assert words == TEXT.replace(".", "").split()
    starts = [w.start_s for w in audio.words]
    assert starts == sorted(starts)
    assert all(0 <= w.start_s <= w.end_s <= audio.duration_s for w in audio.words)


def test_a_job_that_does_not_ask_pays_for_no_check(executor: TaskExecutor) -> None:
    request = CustomVoiceRequest(text=TEXT, speaker="ryan", seed=7)
    audio = executor.execute(Task(id="j2", owner="alice", request=request, attempt=1)).audio
    assert audio is not None
    assert audio.verification is None
    assert audio.words == ()
