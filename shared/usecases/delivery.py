"""Delivering a job's audio to a caller who waits: the whole file, or piece by piece.

Nothing here bypasses the job: a synchronous call is a job created as usual plus a bounded wait
for it, and a stream reads the pieces a worker publishes into the bucket while it works.

How a waiting call learns of progress: it is told. It watches the job's document
(``gw.watcher``, a Firestore listener) and looks again the moment the document changes: the
job moves, or the home worker announces another published piece (``parts_published``), which a
stream then reads at once. Polling stays, as the fallback only: between changes a waiter still
looks every ``api.poll_initial_s``, doubling to ``api.poll_max_s`` (started over at every piece
and every move), so a listener that broke or never started costs latency, never an answer, and
RunPod's pieces, which nobody announces (its worker cannot write the job), are found by
looking. Every wait ends by its deadline, and a stream by its idle timeout, whatever the
listener does; a finished job is answered without one. Each wait holds one listener (a Listen
stream) while it lasts.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta

from shared.domain.audio_formats import AudioFormat, part_object_name
from shared.domain.errors import (
    CanceledJobStream,
    Conflict,
    FailedJobStream,
    InvalidRequest,
    InvalidVoice,
    JobFailed,
    NotFound,
    StillRunning,
    StreamRestarted,
)
from shared.domain.jobs import AudioResult, Job, JobState
from shared.domain.synthesis import output_format
from shared.usecases.gateway import Gateway
from shared.usecases.ports import Changes

MAX_RETURNED_BYTES = 32 * 1024 * 1024
"""Cloud Functions answer at most 32 MiB in one response; longer audio is fetched by URL."""


@dataclass(frozen=True, slots=True)
class Piece:
    index: int
    data: bytes


def wait_for(gw: Gateway, job: Job, *, timeout_s: float) -> Job:
    """The job once it is finished, or as it stands when ``timeout_s`` has passed."""
    if job.state.terminal:
        return job  # answered already (a cache hit): nothing to listen for
    deadline = gw.clock() + timedelta(seconds=timeout_s)
    backoff = _Backoff(gw)
    with gw.watcher.watch(job.id) as changes:
        while not job.state.terminal:
            remaining = (deadline - gw.clock()).total_seconds()
            if remaining <= 0:
                return job
            backoff.wait(changes, remaining)
            job = backoff.seen(_reread(gw, job))
    return job


def require_success(job: Job) -> None:
    """``JobFailed`` (with the job's own error) unless the job has succeeded."""
    if job.state is not JobState.SUCCEEDED:
        raise _failure(job)


def finished_audio(gw: Gateway, job: Job, *, ahead: AudioAhead | None = None) -> bytes:
    """The bytes of a job's audio; ``JobFailed`` when the job did not succeed. ``ahead``: the
    audio already read (a cache hit's), used when it is of the object the job names."""
    require_success(job)
    if job.result is None:
        raise Conflict(f"job {job.id} produced no audio", details={"job_id": job.id})
    if job.result.bytes > MAX_RETURNED_BYTES:
        raise Conflict(
            f"the audio is {job.result.bytes} bytes, more than one response carries; "
            f"fetch it from /v1/jobs/{job.id}/audio",
            details={"job_id": job.id, "max_bytes": MAX_RETURNED_BYTES},
        )
    if ahead is not None and ahead.uri == job.result.uri:
        return ahead.data.result()  # its failure (the object gone) is the read's, as below
    return gw.blobs.get(gw.object_path(job.result.uri), max_bytes=MAX_RETURNED_BYTES)


@dataclass(frozen=True, slots=True)
class AudioAhead:
    """A finished audio object being read beside other work (a cache hit's job write)."""

    uri: str
    data: Future[bytes]


def read_ahead(gw: Gateway, result: AudioResult) -> AudioAhead | None:
    """Start reading ``result``'s audio on ``gw.tasks``; ``None`` for audio too long to be
    answered whole (``finished_audio`` refuses it unread)."""
    if result.bytes > MAX_RETURNED_BYTES:
        return None
    path = gw.object_path(result.uri)
    read = gw.tasks.submit(lambda: gw.blobs.get(path, max_bytes=MAX_RETURNED_BYTES))
    return AudioAhead(uri=result.uri, data=read)


def pieces(gw: Gateway, job: Job, *, start: int = 0, idle_s: float) -> Iterator[Piece]:
    """The job's audio from piece ``start`` on, each piece as soon as it exists.

    Ends when the job has succeeded and every piece was given. Raises ``FailedJobStream``
    (``CanceledJobStream``) when the job fails or is canceled, and ``StillRunning`` when no new
    piece came for ``idle_s``. A job that was not streamed, or was answered from the cache,
    gives its whole audio as piece 0 once it has succeeded.
    """
    if start < 0:
        raise InvalidRequest("a stream starts at piece 0 or later", field="start")
    fmt = output_format(job.request)
    if job.state.terminal:
        # Finished already (a cache hit, a resumed stream): read what is there, listen to nothing.
        yield from _finished_pieces(gw, job, start=start, fmt=fmt, attempt=None)
        return
    index = start
    backoff = _Backoff(gw)
    quiet_until = gw.clock() + timedelta(seconds=idle_s)
    # The pieces of one attempt only: once one is sent, a later attempt's are another audio.
    attempt: int | None = None
    with gw.watcher.watch(job.id) as changes:
        # Looked at only while the job runs, and every turn gives a piece, waits, or leaves the
        # loop (finished, or quiet for ``idle_s``): no turn comes round again having done none
        # of these, whatever the listener says.
        while not job.state.terminal:
            # A queued job has no current attempt to read pieces of (it is between runs).
            running = job.state is JobState.RUNNING
            data = _part(gw, job, index=index, fmt=fmt) if running else None
            if data is not None:
                attempt = _same_attempt(job, attempt)
                yield Piece(index, data)
                index += 1
                backoff.reset()
                quiet_until = gw.clock() + timedelta(seconds=idle_s)
                continue
            job = backoff.seen(_reread(gw, job))
            if attempt is not None:
                _same_attempt(job, attempt)
            if job.state.terminal or (job.state is JobState.RUNNING and not running):
                continue  # ended, or just started: look for its pieces again before waiting
            remaining = (quiet_until - gw.clock()).total_seconds()
            if remaining <= 0:
                raise StillRunning(
                    f"job {job.id} is {job.state}; no audio for {idle_s:g} s",
                    details={"job_id": job.id, "next_piece": index},
                )
            # Woken by the next piece's announcement (or any move); else the fallback look.
            backoff.wait(changes, remaining)
    yield from _finished_pieces(gw, job, start=index, fmt=fmt, attempt=attempt)


# -- helpers -------------------------------------------------------------------------------


class _Backoff:
    """How long a waiter goes without looking when nothing tells it of a change: the fallback
    for a listener that fell silent, and for pieces nobody announces (RunPod's). It eases off
    while nothing happens, and starts short again when the job moves or a piece comes: a job
    that has just started running makes its first audio soon, and a wait that had eased off
    while it queued would see that audio up to ``poll_max_s`` late."""

    def __init__(self, gw: Gateway) -> None:
        self._initial = gw.settings.api.poll_initial_s
        self._max = gw.settings.api.poll_max_s
        self._delay = self._initial
        self._state: JobState | None = None

    def seen(self, job: Job) -> Job:
        if self._state is not None and job.state is not self._state:
            self.reset()
        self._state = job.state
        return job

    def wait(self, changes: Changes, limit_s: float) -> None:
        """Until the job's document changes, or the next fallback look is due (at most
        ``limit_s``). Only a wait that ran out eases the looks off: a change is news, not a
        look that found nothing."""
        if not changes.wait(min(self._delay, limit_s)):
            self._delay = min(self._delay * 2, self._max)

    def reset(self) -> None:
        self._delay = self._initial


def _reread(gw: Gateway, job: Job) -> Job:
    current = gw.jobs.get(job.id)
    if current is None:
        raise NotFound(f"job {job.id} is gone")
    return current


def _finished_pieces(
    gw: Gateway, job: Job, *, start: int, fmt: AudioFormat | None, attempt: int | None
) -> Iterator[Piece]:
    """What is left of a finished job's audio from piece ``start``: read once, nothing more is
    waited for, so a piece that is missing now is gone (``NotFound``), not late."""
    if job.state is not JobState.SUCCEEDED:
        raise _stream_failure(job)
    if attempt is not None:
        _same_attempt(job, attempt)
    parts = _own_parts(job)
    if parts == 0:
        if start == 0:
            yield Piece(0, finished_audio(gw, job))
        return
    for index in range(start, parts):
        data = _part(gw, job, index=index, fmt=fmt)
        if data is None:
            raise NotFound(
                f"piece {index} of job {job.id} is no longer stored; "
                f"fetch the whole audio from /v1/jobs/{job.id}/audio",
                details={"job_id": job.id, "next_piece": index},
            )
        yield Piece(index, data)


def _same_attempt(job: Job, attempt: int | None) -> int:
    """The attempt whose pieces the stream sends; ``StreamRestarted`` once the job is on
    another."""
    if attempt is not None and job.attempts != attempt:
        raise StreamRestarted(
            f"job {job.id} was started again (attempt {job.attempts}) after this stream had "
            f"sent pieces of attempt {attempt}; stream it again from the start",
            details={"job_id": job.id, "attempt": job.attempts},
        )
    return job.attempts


def _own_parts(job: Job) -> int:
    """How many pieces of its audio are stored under the job itself.

    A job answered from the cache has none: its result (``parts`` included) is copied from the
    job that ran, and it is streamed as its whole audio, one piece. That file is what the cache
    vouches for (a lookup skips audio near the bucket's deletion), and ``result.uri`` names it
    outright, where the source's pieces are found only by knowing how the source stored them.
    """
    if job.result is None or job.cached_from is not None:
        return 0
    return job.result.parts


def _part(gw: Gateway, job: Job, *, index: int, fmt: AudioFormat | None) -> bytes | None:
    """Piece ``index`` of the job's audio, ``None`` while it is not there. The one place that
    knows where a job's pieces are stored."""
    if fmt is None:
        return None
    path = part_object_name(
        prefix=gw.settings.audio_prefix,
        job_id=job.id,
        attempt=job.attempts,
        index=index,
        fmt=fmt,
    )
    try:
        return gw.blobs.get(path, max_bytes=MAX_RETURNED_BYTES)
    except NotFound:
        return None


def _failure(job: Job) -> JobFailed | InvalidVoice:
    if job.state is JobState.CANCELED:
        return JobFailed(f"job {job.id} was canceled", details={"job_id": job.id})
    error = job.error
    message = error.message if error else f"job {job.id} is {job.state}"
    details: dict[str, object] = {
        "job_id": job.id,
        "job_error": error.code if error else job.state.value,
    }
    if error is not None and error.code == InvalidVoice.code:
        # The worker refused the caller's voice (its file does not fit the model): the
        # caller's to fix, so a 4xx naming the voice, not a failed synthesis.
        return InvalidVoice(message, field="voice", details=details)
    return JobFailed(message, details=details)


def _stream_failure(job: Job) -> FailedJobStream:
    error = job.error
    details = {"job_id": job.id, "job_error": error.code if error else job.state.value}
    if job.state is JobState.CANCELED:
        return CanceledJobStream(f"job {job.id} was canceled", details=details)
    message = error.message if error else f"job {job.id} is {job.state}"
    return FailedJobStream(message, details=details)
