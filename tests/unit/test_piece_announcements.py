"""The home worker tells a streamed job's document how many pieces it has published, so a
stream listening to it reads each piece at once: the first at once always, later ones at most
once per ``stream_announce_interval_s`` (Firestore's write rate on one document), under the
run's own attempt, and never at the cost of the job when the write fails."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gpu_worker.bucket_io import BucketIO
from gpu_worker.prompt_cache import PromptCache
from gpu_worker.tasks import Task
from shared.domain.audio_formats import AudioFormat, part_object_name
from shared.domain.errors import StorageUnavailable
from shared.domain.jobs import Job, JobError
from shared.domain.synthesis import CustomVoiceRequest
from shared.usecases.gateway import Gateway
from tests.support.gateway import Fakes

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WORKER = "w1"
CLAIM: dict[str, Any] = {"backend": "home-4090", "now": T0, "lease_s": 60}


def claimed(fakes: Fakes, job_id: str = "job1") -> Job:
    fakes.jobs.create(
        Job(
            id=job_id,
            owner="alice",
            request=CustomVoiceRequest(text="One. Two.", speaker="Ryan", stream=True),
            backend="home-4090",
            created_at=T0,
            updated_at=T0,
        )
    )
    return fakes.jobs.update(job_id, lambda j: j.claim(WORKER, **CLAIM))


def claim_again(fakes: Fakes, job_id: str = "job1") -> Job:
    """The run lost its lease and the job was claimed again: a new attempt."""
    error = JobError(code="unavailable", message="lease lost", retryable=True)
    fakes.jobs.update(job_id, lambda j: j.release(WORKER, attempt=j.attempts, error=error, now=T0))
    return fakes.jobs.update(job_id, lambda j: j.claim(WORKER, **CLAIM))


def bucket(gateway: Gateway) -> BucketIO:
    return BucketIO(gateway=gateway, prompts=PromptCache(max_bytes=0, max_file_bytes=0))


def publish(io: BucketIO, job: Job, index: int) -> None:
    io.publish_part(Task.of(job), index=index, data=b"piece", fmt=AudioFormat.PCM)


def test_the_first_piece_is_announced_at_once_and_later_ones_at_most_once_a_second(
    gateway: Gateway, fakes: Fakes
) -> None:
    assert gateway.settings.worker.stream_announce_interval_s == 1.0
    job = claimed(fakes)
    io = bucket(gateway)
    publish(io, job, 0)
    assert fakes.jobs.announcements[job.id] == 1
    fakes.clock.advance(0.3)
    publish(io, job, 1)  # within the second: found by the stream's own look
    assert fakes.jobs.announcements[job.id] == 1
    fakes.clock.advance(0.8)
    publish(io, job, 2)  # and counted by the next announcement
    stored = fakes.jobs.get(job.id)
    assert stored is not None
    assert fakes.jobs.announcements[job.id] == 2
    assert stored.parts_published == {1: 3}
    assert stored.announced_parts == 3
    assert fakes.jobs.writes[job.id] == 1  # the claim: announcements are no transactions


def test_every_run_announces_its_first_piece_under_its_own_attempt(
    gateway: Gateway, fakes: Fakes
) -> None:
    first = claimed(fakes)
    io = bucket(gateway)
    publish(io, first, 0)
    second = claim_again(fakes)
    assert second.attempts == 2
    assert second.announced_parts == 0
    publish(io, second, 0)  # a new run's first piece: at once, whatever the last run did
    publish(io, first, 1)  # the stale run, late: its own key, within its interval
    fakes.clock.advance(5)
    publish(io, first, 2)
    stored = fakes.jobs.get(first.id)
    assert stored is not None
    assert stored.parts_published == {1: 3, 2: 1}
    assert stored.announced_parts == 1  # what the current run published, untouched


def test_a_failed_announcement_never_fails_the_piece(
    gateway: Gateway,
    fakes: Fakes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = claimed(fakes)
    io = bucket(gateway)

    def unavailable(job_id: str, *, attempt: int, parts: int) -> None:
        raise StorageUnavailable("announce parts: ServiceUnavailable")

    monkeypatch.setattr(fakes.jobs, "announce_parts", unavailable)
    publish(io, job, 0)
    path = part_object_name(prefix="audio/", job_id=job.id, attempt=1, index=0,
                            fmt=AudioFormat.PCM)  # fmt: skip
    assert fakes.blobs.get(path) == b"piece"  # the piece is out: a stream finds it by looking
    assert "pieces not announced" in caplog.text


def test_a_piece_of_a_job_that_is_gone_is_announced_to_no_one(
    gateway: Gateway, fakes: Fakes
) -> None:
    job = claimed(fakes)
    gone = job.model_copy(update={"id": "job-gone"})
    publish(bucket(gateway), gone, 0)  # no error, and no document made for it
    assert fakes.jobs.get("job-gone") is None
