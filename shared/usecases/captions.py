"""A job's words, timed against its audio, and the captions made of them.

A speech job's worker records when each word is said (``result.words``) where the job asked
for checks (``verify``) and the worker can align words to audio. A joined batch's file is made
of its items' audio, each starting where the join job recorded (``result.starts_s``), so its
words are every item's words moved by its item's start. Nothing here reads audio.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.captions import CaptionFormat, captions
from shared.domain.errors import Conflict, JobNotSucceeded, NoJoinedFile, NoWordTimings
from shared.domain.jobs import AudioResult, Job, JobState
from shared.domain.keys import Principal
from shared.domain.synthesis import BatchRequest, SpeechFields
from shared.domain.verification import WordTiming
from shared.usecases import delivery
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import get_job

MAX_CAPTIONED_AUDIO_BYTES = delivery.MAX_RETURNED_BYTES * 3 // 4 - 2 * 1024 * 1024
"""Audio answered inside JSON grows by a third as base64, and its word times come with it
(about 60 bytes a word: 2 MiB is some 30,000 words), all in one response."""

MAX_NAMED_ITEMS = 20
"""Items named in an error's details at most: a 1,000-item batch made without checks would
otherwise answer with every one of its ids."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TimedWords:
    """The words of one audio file, in the order said, in runs that never share a caption
    (a joined batch's items: its paragraphs)."""

    segments: tuple[tuple[WordTiming, ...], ...]
    duration_s: float
    """Of the audio they are timed against."""


def timed_words(gw: Gateway, *, principal: Principal, job_id: str) -> TimedWords:
    """The words of a succeeded speech job, or of a joined batch's file. Someone else's job is
    ``NotFound``, as everywhere."""
    job = get_job(gw, principal=principal, job_id=job_id)
    if job.state is not JobState.SUCCEEDED:
        raise JobNotSucceeded(
            f"job {job.id} is {job.state}; its words are timed once it has succeeded",
            details={"state": job.state.value},
        )
    if isinstance(job.request, BatchRequest):
        return _joined_words(gw, job, job.request)
    if not isinstance(job.request, SpeechFields):
        raise Conflict(
            f"job {job.id} ({job.request.mode}) speaks no text to caption: captions are made "
            "for speech jobs and for batches submitted with join",
            details={"mode": job.request.mode.value},
        )
    if job.result is None or not job.result.words:
        raise NoWordTimings(f"job {job.id} has no word timings: {_HOW_TO_GET_THEM}")
    return TimedWords(segments=(_within(job.result),), duration_s=job.result.duration_s)


@dataclass(frozen=True, kw_only=True, slots=True)
class CaptionedAudio:
    data: bytes
    words: tuple[WordTiming, ...]
    """Empty when the worker that made it could not align words to audio."""


def captioned_audio(gw: Gateway, job: Job) -> CaptionedAudio:
    """A finished speech job's audio and its words, small enough for one JSON answer;
    ``JobFailed`` when the job did not succeed."""
    delivery.require_success(job)
    if job.result is not None and job.result.bytes > MAX_CAPTIONED_AUDIO_BYTES:
        raise Conflict(
            f"the audio is {job.result.bytes} bytes, more than one answer carries with its "
            f"words; fetch it from /v1/jobs/{job.id}/audio and its captions from "
            f"/v1/jobs/{job.id}/captions",
            details={"job_id": job.id, "max_bytes": MAX_CAPTIONED_AUDIO_BYTES},
        )
    data = delivery.finished_audio(gw, job)
    assert job.result is not None  # finished_audio refuses a job without audio
    return CaptionedAudio(data=data, words=_within(job.result))


def job_captions(gw: Gateway, *, principal: Principal, job_id: str, fmt: CaptionFormat) -> str:
    """The job's captions as an SRT or WebVTT document."""
    words = timed_words(gw, principal=principal, job_id=job_id)
    return captions(words.segments, fmt=fmt, duration_s=words.duration_s)


_HOW_TO_GET_THEM = (
    "submit it with verify: true (batch items and renders have it unless they say otherwise) "
    "to a backend whose workers align words to audio"
)


def _joined_words(gw: Gateway, batch: Job, request: BatchRequest) -> TimedWords:
    if request.join is None:
        raise NoJoinedFile(
            f"batch {batch.id} has no joined file to caption: submit it with join: true, or "
            "ask for each item's captions (GET /v1/jobs/{item}/captions)"
        )
    # Every item and the join job in one read, as the manifest reads them.
    children = gw.jobs.get_many((*request.children, request.join.job_id))
    joined = children.get(request.join.job_id)
    if joined is None or joined.result is None:
        raise JobNotSucceeded(
            f"batch {batch.id} has no joined file yet", details={"state": batch.state.value}
        )
    results: list[AudioResult] = []
    missing: list[str] = []
    for child_id in request.children:
        item = children.get(child_id)
        if item is None or item.result is None or not item.result.words:
            missing.append(child_id)
        else:
            results.append(item.result)
    if missing:
        # Captions with holes would show nothing for whole paragraphs: refused, naming them.
        raise NoWordTimings(
            f"{len(missing)} of {len(request.children)} items of batch {batch.id} have no word "
            f"timings: {_HOW_TO_GET_THEM}",
            details={"items": missing[:MAX_NAMED_ITEMS]},
        )
    starts = joined.result.starts_s
    if len(starts) != len(request.children):
        raise NoWordTimings(
            f"the joined file of batch {batch.id} does not record where its items start "
            f"(made before that was kept): retry its join job {joined.id}",
            details={"job_id": joined.id},
        )
    segments = tuple(
        tuple(w.shifted(start_s) for w in _within(result))
        for result, start_s in zip(results, starts, strict=True)
    )
    return TimedWords(segments=segments, duration_s=joined.result.duration_s)


def _within(result: AudioResult) -> tuple[WordTiming, ...]:
    """The words as recorded, none past the end of their own audio: an aligner's last word
    may run over, and moved into a joined file it would run into the next item."""
    end = result.duration_s
    return tuple(
        w if w.end_s <= end else WordTiming(word=w.word, start_s=min(w.start_s, end), end_s=end)
        for w in result.words
    )
