"""The audio cache, the event log and an owner's job listing, held to one contract: the
in-memory fakes and the Firestore adapters on the emulator answer every case alike, so the unit
tests that run over the fakes show what the cloud does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.backends import HealthEvent
from shared.domain.jobs import AudioResult, Job, JobState
from shared.domain.synthesis import CustomVoiceRequest
from shared.domain.voices import Voice, VoiceState
from shared.usecases.gateway import Gateway
from shared.usecases.ports import (
    AudioCache,
    BackendStore,
    CachedAudio,
    EventLog,
    JobStore,
    VoiceStore,
)
from tests.support.backends import heartbeat
from tests.support.fakes import (
    InMemoryAudioCache,
    InMemoryBackendStore,
    InMemoryEventLog,
    InMemoryJobStore,
    InMemoryVoiceStore,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RESULT = AudioResult(
    uri="gs://b/audio/j1/1.wav",
    format="wav",
    content_type="audio/wav",
    sample_rate=24000,
    duration_s=1.5,
    bytes=72044,
)


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(params=["fake", "firestore"])
def cache(request: pytest.FixtureRequest) -> Iterator[AudioCache]:
    if request.param == "fake":
        yield InMemoryAudioCache()
    else:
        gateway: Gateway = request.getfixturevalue("cloud_gateway")
        yield gateway.cache


@pytest.fixture(params=["fake", "firestore"])
def events(request: pytest.FixtureRequest) -> Iterator[EventLog]:
    if request.param == "fake":
        yield InMemoryEventLog()
    else:
        gateway: Gateway = request.getfixturevalue("cloud_gateway")
        yield gateway.events


@pytest.fixture(params=["fake", "firestore"])
def jobs(request: pytest.FixtureRequest) -> Iterator[JobStore]:
    if request.param == "fake":
        yield InMemoryJobStore()
    else:
        gateway: Gateway = request.getfixturevalue("cloud_gateway")
        yield gateway.jobs


def test_the_cache_answers_what_was_put_and_a_later_put_replaces_it(cache: AudioCache) -> None:
    assert cache.get("k1") is None
    first = CachedAudio(key="k1", job_id="j1", result=RESULT, created_at=T0)
    cache.put(first)
    assert cache.get("k1") == first
    second = CachedAudio(
        key="k1", job_id="j2", result=RESULT.model_copy(update={"bytes": 9}), created_at=later(5)
    )
    cache.put(second)
    assert cache.get("k1") == second
    assert cache.get("k2") is None


@pytest.fixture(params=["fake", "firestore"])
def backends(request: pytest.FixtureRequest) -> Iterator[BackendStore]:
    if request.param == "fake":
        yield InMemoryBackendStore()
    else:
        gateway: Gateway = request.getfixturevalue("cloud_gateway")
        yield gateway.backends


def test_backends_are_read_together_and_only_those_that_reported_are_named(
    backends: BackendStore,
) -> None:
    assert backends.get_many([]) == {}
    beat = heartbeat(backend_id="b1", at=T0)
    backends.heartbeat(beat)
    assert backends.get_many(["b1", "b2"]) == {"b1": beat}
    assert backends.get_many(["b2"]) == {}


def test_the_event_log_answers_the_newest_first_up_to_the_limit(events: EventLog) -> None:
    recorded = [
        HealthEvent(at=later(n), event="offline", backend="home-4090", detail=str(n))
        for n in (3, 1, 2)
    ]
    for event in recorded:
        events.record(event)
    assert [e.detail for e in events.recent(limit=10)] == ["3", "2", "1"]
    assert events.recent(limit=2) == sorted(recorded, key=lambda e: e.at, reverse=True)[:2]


def job(job_id: str, *, owner: str, created: float, state: JobState = JobState.QUEUED) -> Job:
    return Job(
        id=job_id,
        owner=owner,
        request=CustomVoiceRequest(text="hi", speaker="Vivian"),
        backend="home-4090",
        state=state,
        created_at=later(created),
        updated_at=later(created),
    )


def test_an_owners_jobs_are_paged_by_creation_then_id_with_their_filters(jobs: JobStore) -> None:
    # Two created at the same instant: the id breaks the tie, so no page skips or repeats one.
    for job_id, created, state in [
        ("a3", 3.0, JobState.SUCCEEDED),
        ("a1", 1.0, JobState.QUEUED),
        ("a2b", 2.0, JobState.SUCCEEDED),
        ("a2a", 2.0, JobState.QUEUED),
    ]:
        jobs.create(job(job_id, owner="ann", created=created, state=state))
    jobs.create(job("b1", owner="bob", created=1.0))

    def page(
        *,
        after: tuple[datetime, str] | None = None,
        state: JobState | None = None,
        since: datetime | None = None,
        limit: int = 10,
    ) -> list[str]:
        found = jobs.list_owned(
            owner="ann", state=state, created_after=since, start_after=after, limit=limit
        )
        return [j.id for j in found]

    assert page() == ["a1", "a2a", "a2b", "a3"]
    assert page(limit=2) == ["a1", "a2a"]
    assert page(after=(later(2.0), "a2a"), limit=2) == ["a2b", "a3"]
    assert page(state=JobState.SUCCEEDED) == ["a2b", "a3"]
    assert page(since=later(1.5)) == ["a2a", "a2b", "a3"]
    assert page(after=(later(3.0), "a3")) == []


@pytest.fixture(params=["fake", "firestore"])
def voices(request: pytest.FixtureRequest) -> Iterator[VoiceStore]:
    if request.param == "fake":
        yield InMemoryVoiceStore()
    else:
        gateway: Gateway = request.getfixturevalue("cloud_gateway")
        yield gateway.voices


def test_voices_are_found_by_name_whatever_its_case_through_the_query(voices: VoiceStore) -> None:
    def voice(voice_id: str, name: str, state: VoiceState = VoiceState.ACTIVE) -> Voice:
        return Voice(
            id=voice_id, name=name, owner=None, bucket="b", object_name=f"v/{voice_id}.pt",
            generation=1, size=10, state=state, created_at=T0, updated_at=T0,
        )  # fmt: skip

    for made in (
        voice("v1", "Narrator"),
        voice("v2", "NARRATOR"),
        voice("v3", "Narrator two"),
        voice("v4", "narrator", VoiceState.QUARANTINED),
    ):
        voices.update(made.id, lambda _, made=made: made)  # type: ignore[misc]
    assert [v.id for v in voices.query(name="narrator", limit=10)] == ["v1", "v2"]
    assert voices.query(name="nobody", limit=10) == []
