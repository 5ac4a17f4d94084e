"""Jobs whose audio has word timings and a verification report, without a worker that aligns.

``stored_speech`` and ``stored_batch`` put finished jobs into the fake store as a verifying
worker (and a join job) leaves them; ``Aligner`` plays the aligning half of a worker while a
``ScriptedWorker`` makes the audio: on every step of the fake clock it gives each speech job
that asked for ``verify`` and has succeeded its words and report, and each join job where its
items start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.domain.audio_formats import FORMATS, AudioFormat
from shared.domain.jobs import AudioResult, Job, JobState
from shared.domain.synthesis import (
    BatchRequest,
    CustomVoiceRequest,
    JoinPlan,
    JoinRequest,
    JoinSource,
    SpeechFields,
)
from shared.domain.verification import (
    SIGNAL_CHECKS,
    Check,
    ChunkAttempt,
    ChunkReport,
    Measure,
    VerifyReport,
    WordTiming,
)
from tests.support.gateway import Fakes

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def words_of(text: str, *, duration_s: float, start_s: float = 0.0) -> tuple[WordTiming, ...]:
    """The text's words said evenly over ``duration_s`` from ``start_s``, each followed by a
    fifth of its slot in silence."""
    said = text.split()
    slot = duration_s / max(len(said), 1)
    return tuple(
        WordTiming(word=w, start_s=start_s + i * slot, end_s=start_s + (i + 0.8) * slot)
        for i, w in enumerate(said)
    )


def attempt(*, passed: bool, seed: int | None, duration_s: float = 1.0) -> ChunkAttempt:
    measures = tuple(
        Measure(check=check, value=0.1, bound=0.5, passed=True) for check in SIGNAL_CHECKS
    )
    heard = Measure(
        check=Check.INTELLIGIBILITY, value=0.05 if passed else 0.4, bound=0.15, passed=passed
    )
    return ChunkAttempt(
        seed=seed,
        duration_s=duration_s,
        measures=(*measures, heard),
        transcript="heard",
    )


def report(
    texts: list[str], *, remade: frozenset[int] = frozenset(), failing: frozenset[int] = frozenset()
) -> VerifyReport:
    """One chunk per text: ``remade`` chunks failed once and were said again (a ``failing``
    one failed again, and its better attempt was kept)."""
    chunks = []
    for index, text in enumerate(texts):
        attempts = [attempt(passed=index not in remade and index not in failing, seed=None)]
        if index in remade or index in failing:
            attempts.append(attempt(passed=index not in failing, seed=7 + index))
        kept = len(attempts) - 1
        chunks.append(ChunkReport(index=index, text=text, attempts=tuple(attempts), kept=kept))
    return VerifyReport(checks=(*SIGNAL_CHECKS, Check.INTELLIGIBILITY), chunks=tuple(chunks))


def audio(
    job_id: str,
    *,
    duration_s: float,
    words: tuple[WordTiming, ...] = (),
    verification: VerifyReport | None = None,
    starts_s: tuple[float, ...] = (),
    fmt: AudioFormat = AudioFormat.MP3,
) -> AudioResult:
    return AudioResult(
        uri=f"gs://test-bucket/audio/{job_id}/1.{fmt.value}",
        format=fmt,
        content_type=FORMATS[fmt].content_type,
        sample_rate=24_000,
        duration_s=duration_s,
        bytes=1000,
        verification=verification,
        words=words,
        starts_s=starts_s,
    )


def stored_speech(
    fakes: Fakes,
    *,
    job_id: str,
    text: str,
    result: AudioResult | None,
    owner: str = "alice",
    state: JobState = JobState.SUCCEEDED,
    parent_id: str | None = None,
) -> Job:
    job = Job(
        id=job_id,
        owner=owner,
        request=CustomVoiceRequest(text=text, speaker="ryan", format="mp3", verify=True),
        backend="home-4090",
        state=state,
        attempts=1,
        result=result,
        parent_id=parent_id,
        created_at=NOW,
        updated_at=NOW,
        state_times={JobState.QUEUED: NOW, state: NOW},
    )
    stored, _ = fakes.jobs.create(job)
    return stored


@dataclass(frozen=True, kw_only=True)
class Item:
    text: str
    duration_s: float
    words: bool = True
    """Whether its worker recorded word timings."""


def stored_batch(
    fakes: Fakes,
    *,
    batch_id: str,
    items: list[Item],
    gap_s: float,
    join: bool = True,
    owner: str = "alice",
) -> Job:
    """A succeeded batch as its items' workers and its join job leave it: each item with its
    own words and report, the joined file with every item's start, ``gap_s`` apart."""
    child_ids = tuple(f"{batch_id}i{n}" for n in range(len(items)))
    starts, at = [], 0.0
    for item, child_id in zip(items, child_ids, strict=True):
        words = words_of(item.text, duration_s=item.duration_s) if item.words else ()
        result = audio(
            child_id,
            duration_s=item.duration_s,
            words=words,
            verification=report([item.text]) if item.words else None,
        )
        stored_speech(
            fakes, job_id=child_id, text=item.text, result=result, owner=owner, parent_id=batch_id
        )
        starts.append(at)
        at += item.duration_s + gap_s
    total = at - gap_s
    plan = JoinPlan(job_id=f"{batch_id}j", format=AudioFormat.MP3, gap_ms=round(gap_s * 1000))
    joined = None
    if join:
        joined = audio(plan.job_id, duration_s=total, starts_s=tuple(starts))
        fakes.jobs.create(
            Job(
                id=plan.job_id,
                owner=owner,
                request=JoinRequest(
                    sources=tuple(
                        JoinSource(path=f"audio/{c}/1.mp3", bytes=1000) for c in child_ids
                    ),
                    format=AudioFormat.MP3,
                    gap_ms=plan.gap_ms,
                ),
                backend="home-4090",
                state=JobState.SUCCEEDED,
                attempts=1,
                result=joined,
                parent_id=batch_id,
                created_at=NOW,
                updated_at=NOW,
            )
        )
    parent = Job(
        id=batch_id,
        owner=owner,
        request=BatchRequest(
            children=child_ids,
            keys=tuple(f"k{n}" for n in range(len(items))),
            fingerprint="0" * 64,
            join=plan if join else None,
        ),
        backend="",
        state=JobState.SUCCEEDED,
        result=joined,
        created_at=NOW,
        updated_at=NOW,
    )
    stored, _ = fakes.jobs.create(parent)
    return stored


@dataclass
class Aligner:
    """The aligning half of a verifying worker, hooked to the fake clock after the worker that
    makes the audio (create it after that ``ScriptedWorker``)."""

    fakes: Fakes
    gap_s: float = 0.0
    """Silence between a joined batch's items."""
    remade: set[str] = field(default_factory=set)
    """Texts whose one chunk failed a check once and passed when said again."""
    failing: set[str] = field(default_factory=set)
    """Texts whose one chunk failed every attempt (the better one kept)."""
    aligned: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fakes.clock.on_sleep.append(self.step)

    def step(self) -> None:
        for job in self.fakes.jobs.find(state=JobState.SUCCEEDED, limit=1000):
            if job.id in self.aligned or job.result is None:
                continue
            request = job.request
            if isinstance(request, SpeechFields) and request.verify:
                self._timed(job, request.text)
            elif isinstance(request, JoinRequest) and job.parent_id is not None:
                self._joined(job, job.parent_id)

    def _timed(self, job: Job, text: str) -> None:
        assert job.result is not None
        result = job.result.model_copy(
            update={
                "words": words_of(text, duration_s=job.result.duration_s),
                "verification": report(
                    [text],
                    remade=frozenset({0} if text in self.remade else ()),
                    failing=frozenset({0} if text in self.failing else ()),
                ),
            }
        )
        self.fakes.jobs.update(job.id, lambda j: j.model_copy(update={"result": result}))
        self.aligned.append(job.id)

    def _joined(self, job: Job, parent_id: str) -> None:
        parent = self.fakes.jobs.get(parent_id)
        assert parent is not None
        assert isinstance(parent.request, BatchRequest)
        items = self.fakes.jobs.get_many(parent.request.children)
        starts, at = [], 0.0
        for child_id in parent.request.children:
            child_result = items[child_id].result
            assert child_result is not None
            starts.append(at)
            at += child_result.duration_s + self.gap_s
        assert job.result is not None
        result = job.result.model_copy(
            update={"starts_s": tuple(starts), "duration_s": at - self.gap_s}
        )
        self.fakes.jobs.update(job.id, lambda j: j.model_copy(update={"result": result}))
        self.aligned.append(job.id)
