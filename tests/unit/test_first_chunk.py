"""A streamed job's first audio waits for one short sentence, not a whole chunk: the worker says
its first sentence alone, then packs the rest as usual. A job that is not streamed gains nothing
from a short first chunk and keeps its chunks even."""

from __future__ import annotations

from gpu_worker.synthesizer import ModelSet, Synthesizer
from gpu_worker.tasks import Task, TaskExecutor
from shared.domain.audio_formats import AudioFormat
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import VoiceSettings
from tests.support.signals import MemoryIO, SeededEngine

TEXT = "Hello there. The rest of the story follows in one longer chunk of text."


def said(*, stream: bool) -> list[str]:
    engine = SeededEngine()
    executor = TaskExecutor(
        models=ModelSet([Synthesizer(engine=engine, max_new_tokens=2048)]),
        io=MemoryIO(),
        limits=VoiceSettings(),
        max_chunk_chars=300,
        first_chunk_chars=120,
        max_join_s=60,
    )
    request = CustomVoiceRequest(
        text=TEXT, speaker="ryan", seed=1, stream=stream, format=AudioFormat.MP3
    )
    executor.execute(Task(id="j1", owner="alice", request=request, attempt=1))
    return [text for text, _ in engine.said]


def test_a_streamed_job_says_its_first_sentence_alone() -> None:
    assert said(stream=True) == [
        "Hello there.",
        "The rest of the story follows in one longer chunk of text.",
    ]


def test_a_job_that_is_not_streamed_keeps_its_chunks_whole() -> None:
    assert said(stream=False) == [TEXT]
