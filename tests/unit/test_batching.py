"""Batching without a model or Pub/Sub: the batch collector, and the rules the synthesizer
applies per line (a fake engine stands in for both real ones)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from gpu_worker.audio.encoding import Waveform
from gpu_worker.audio.ops import StreamedClip, concatenate, joint
from gpu_worker.batching import BatchQueue
from gpu_worker.bootstrap import bootstrap
from gpu_worker.engine import Design, Line, Speaker
from gpu_worker.synthesizer import ModelSet, Synthesizer
from shared.domain.backends import ModelFacts
from shared.domain.catalog import Language
from shared.domain.errors import (
    PromptTooLong,
    SynthesisFailed,
    SynthesisRunaway,
    TransientError,
)
from shared.domain.modes import ModelType
from shared.domain.voice_file import PromptItem
from shared.settings import Settings
from shared.usecases.gateway import Gateway

RATE = 24_000
FRAME = 1920  # samples per 12.5 Hz codec frame


class FakeEngine:
    """Says each text as ``frames[text]`` codec frames of a constant level (default 5)."""

    model_source = "fake"
    device = "cpu"
    model_type = ModelType.CUSTOM_VOICE
    facts = ModelFacts(
        model="fake", model_type=ModelType.CUSTOM_VOICE, codebook_size=2048, num_code_groups=16
    )

    def __init__(
        self,
        *,
        frames: dict[str, int] | None = None,
        rejects: frozenset[str] = frozenset(),
        too_long: frozenset[str] = frozenset(),
        out_of_memory_above: int = 0,
    ) -> None:
        self.frames = frames or {}
        self.rejects = rejects
        self.too_long = too_long
        self.out_of_memory_above = out_of_memory_above
        self.calls: list[list[str]] = []

    def load(self) -> None: ...

    def check_fits(self, line: Line, *, max_new_tokens: int) -> None:
        if line.text in self.too_long:
            raise PromptTooLong("does not fit")

    def synthesize(self, lines: Sequence[Line], *, max_new_tokens: int) -> list[Waveform]:
        self.calls.append([line.text for line in lines])
        if any(line.text in self.rejects for line in lines):
            raise ValueError("Unsupported speakers")
        if self.out_of_memory_above and len(lines) > self.out_of_memory_above:
            raise TransientError("GPU out of memory")
        return [self._say(line.text, max_new_tokens) for line in lines]

    def stream(self, line: Line, *, max_new_tokens: int) -> Iterator[Waveform]:
        total = min(self.frames.get(line.text, 5), max_new_tokens)
        for _ in range(total):
            yield Waveform(samples=np.full(FRAME, 0.1, np.float32), sample_rate=RATE)

    def create_voice_prompt(
        self, *, reference: Waveform, ref_text: str | None, x_vector_only: bool
    ) -> tuple[PromptItem, ...]:
        return ()

    def _say(self, text: str, limit: int) -> Waveform:
        frames = min(self.frames.get(text, 5), limit)
        return Waveform(samples=np.full(frames * FRAME, 0.1, np.float32), sample_rate=RATE)


def line(text: str, *, cap: int | None = None) -> Line:
    return Line(
        text=text, language=Language.ENGLISH, voice=Speaker(name="ryan"), max_new_tokens=cap
    )


# -- the synthesizer's rules, per line ---------------------------------------------------


def test_a_runaway_line_fails_alone_and_its_neighbours_keep_their_audio() -> None:
    engine = FakeEngine(frames={"loops": 10_000})
    results = Synthesizer(engine=engine, max_new_tokens=2048).speak(
        [line("one"), line("loops"), line("three")]
    )
    assert engine.calls == [["one", "loops", "three"]]  # one call for the whole batch
    one, loops, three = results
    assert isinstance(loops, SynthesisRunaway)
    assert isinstance(one, Waveform)
    assert isinstance(three, Waveform)
    assert len(one.samples) == len(three.samples) == 5 * FRAME


def test_a_rejected_line_is_found_by_running_the_batch_line_by_line() -> None:
    engine = FakeEngine(rejects=frozenset({"bad"}))
    results = Synthesizer(engine=engine, max_new_tokens=2048).speak(
        [line("a"), line("bad"), line("c")]
    )
    assert engine.calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert [type(r) for r in results] == [Waveform, SynthesisFailed, Waveform]
    assert "rejected" in str(results[1])


def test_a_batch_too_big_for_the_gpu_is_retried_one_by_one() -> None:
    engine = FakeEngine(out_of_memory_above=1)
    results = Synthesizer(engine=engine, max_new_tokens=2048).speak([line("a"), line("b")])
    assert all(isinstance(r, Waveform) for r in results)


def test_a_line_that_cannot_fit_is_refused_before_the_call() -> None:
    engine = FakeEngine(too_long=frozenset({"long"}))
    results = Synthesizer(engine=engine, max_new_tokens=2048).speak([line("long"), line("ok")])
    assert engine.calls == [["ok"]]
    assert isinstance(results[0], PromptTooLong)
    assert isinstance(results[1], Waveform)


def test_a_callers_cap_cuts_its_own_line_in_a_batch_given_a_larger_limit() -> None:
    engine = FakeEngine(frames={"capped": 40, "free": 40})
    capped, free = Synthesizer(engine=engine, max_new_tokens=2048).speak(
        [line("capped", cap=3), line("free")]
    )
    assert isinstance(capped, Waveform)
    assert isinstance(free, Waveform)
    assert len(capped.samples) == 3 * FRAME  # cut to its cap, not failed as a runaway
    assert len(free.samples) == 40 * FRAME


def test_a_stream_that_reaches_its_bound_fails_after_its_pieces() -> None:
    engine = FakeEngine(frames={"loops": 10_000})
    synth = Synthesizer(engine=engine, max_new_tokens=20)
    pieces: list[Waveform] = []

    def consume() -> None:
        pieces.extend(synth.stream(line("loops")))

    with pytest.raises(SynthesisRunaway):
        consume()
    assert len(pieces) == 20


def test_a_stream_closed_early_frees_the_engine() -> None:
    synth = Synthesizer(engine=FakeEngine(), max_new_tokens=2048)
    stream = synth.stream(line("a"))
    next(stream)
    stream.close()
    assert isinstance(synth.say(line("b")), Waveform)  # the lock was released


def test_the_queue_batches_only_lines_of_one_kind_of_voice() -> None:
    engine = FakeEngine()
    synth = Synthesizer(engine=engine, max_new_tokens=2048, batch_size=8)
    design = Line(text="d", language=Language.ENGLISH, voice=Design(instruct="calm"))
    results = synth.queue.submit([line("a"), design, line("b")])
    assert engine.calls == [["a", "b"], ["d"]]
    assert all(isinstance(r, Waveform) for r in results)


# -- the batch collector ------------------------------------------------------------------


def run_concurrently(queue: BatchQueue[str, str], groups: list[list[str]]) -> list[list[str]]:
    results: list[list[str]] = [[] for _ in groups]
    barrier = threading.Barrier(len(groups))

    def submit(index: int) -> None:
        barrier.wait()
        results[index] = queue.submit(groups[index])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(groups))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_concurrent_submitters_share_a_batch_and_each_gets_its_own_results() -> None:
    batches: list[list[str]] = []

    def run(items: list[str]) -> list[str]:
        batches.append(items)
        return [item.upper() for item in items]

    # A generous window: the test must not depend on thread timing to see one batch.
    queue: BatchQueue[str, str] = BatchQueue(run=run, size=4, window_s=5.0)
    results = run_concurrently(queue, [["a"], ["b"], ["c"], ["d"]])
    assert results == [["A"], ["B"], ["C"], ["D"]]
    assert len(batches) == 1  # the fourth item filled the batch before the window closed
    assert sorted(batches[0]) == ["a", "b", "c", "d"]


def test_batches_never_exceed_the_bound_and_keep_a_jobs_lines_in_order() -> None:
    batches: list[list[str]] = []

    def run(items: list[str]) -> list[str]:
        batches.append(items)
        return [item.upper() for item in items]

    queue: BatchQueue[str, str] = BatchQueue(run=run, size=3, window_s=0.0)
    groups = [[f"j{j}-{i}" for i in range(4)] for j in range(3)]
    results = run_concurrently(queue, groups)
    assert results == [[item.upper() for item in group] for group in groups]
    assert all(len(batch) <= 3 for batch in batches)
    assert sorted(i for b in batches for i in b) == sorted(i for g in groups for i in g)


def test_a_failed_batch_raises_in_its_submitter_and_frees_the_queue() -> None:
    def run(items: list[str]) -> list[str]:
        if "boom" in items:
            raise RuntimeError("boom")
        return items

    queue: BatchQueue[str, str] = BatchQueue(run=run, size=2, window_s=0.0)
    with pytest.raises(RuntimeError, match="boom"):
        queue.submit(["boom"])
    assert queue.submit(["x", "y", "z"]) == ["x", "y", "z"]


def test_the_leader_does_not_wait_out_the_window_once_the_batch_is_full() -> None:
    queue: BatchQueue[str, str] = BatchQueue(run=lambda items: items, size=2, window_s=30.0)
    started = time.monotonic()
    assert queue.submit(["a", "b"]) == ["a", "b"]
    assert time.monotonic() - started < 30.0  # not a timing test: only "did not wait it out"


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size"):
        BatchQueue(run=lambda items: items, size=0, window_s=0.0)


# -- a clip in pieces ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last"), [(True, True), (True, False), (False, True), (False, False)]
)
@pytest.mark.parametrize("total", [100, 479, 480, 5000, 30_000])
def test_a_clip_fed_in_pieces_adds_up_to_the_clip_joined_whole(
    first: bool, last: bool, total: int
) -> None:
    rng = np.random.default_rng(total)
    samples = rng.uniform(-0.5, 0.5, total).astype(np.float32)
    clip = StreamedClip(first=first, last=last, sample_rate=RATE)
    out = []
    cuts = sorted(rng.integers(0, total, 6).tolist())
    for start, end in zip([0, *cuts], [*cuts, total], strict=True):
        out.append(clip.feed(Waveform(samples=samples[start:end], sample_rate=RATE)))
    out.append(clip.finish())
    whole = joint(Waveform(samples=samples, sample_rate=RATE), first=first, last=last)
    assert np.array_equal(concatenate(out).samples, whole.samples)


# -- the subscriber's flow control -------------------------------------------------------


class FakeFuture:
    def done(self) -> bool:
        return False

    def cancel(self) -> None: ...

    def result(self, timeout: float | None = None) -> None: ...


class RecordingSubscriber:
    def __init__(self) -> None:
        self.kwargs: dict[str, object] = {}

    def subscription_path(self, project: str, name: str) -> str:
        return f"projects/{project}/subscriptions/{name}"

    def subscribe(self, path: str, **kwargs: object) -> FakeFuture:
        self.kwargs = kwargs
        return FakeFuture()


def test_the_subscribers_flow_control_follows_the_batch_bound(
    settings: Settings, gateway: Gateway
) -> None:
    worker_settings = settings.worker.model_copy(update={"batch_size": 6})
    client = RecordingSubscriber()
    worker = bootstrap(
        settings.model_copy(update={"worker": worker_settings}),
        gateway=gateway,
        models=ModelSet([Synthesizer(engine=FakeEngine(), max_new_tokens=64)]),
        subscriber_client=client,  # type: ignore[arg-type]
    )
    stop = threading.Event()
    stop.set()
    worker.subscriber.serve(stop)
    flow = client.kwargs["flow_control"]
    assert flow.max_messages == 6  # type: ignore[attr-defined]
    pool = client.kwargs["scheduler"]._executor  # type: ignore[attr-defined]
    assert pool._max_workers == 6  # a callback thread for every job in hand
