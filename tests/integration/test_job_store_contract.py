"""The job store's queries, held to one contract: the in-memory fake and the Firestore adapter
on the emulator answer every case alike, so unit tests over the fake show what the cloud does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from shared.bootstrap import build_gateway
from shared.domain.jobs import Job, JobState
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import Settings
from shared.usecases.ports import JobStore
from tests.support.fakes import InMemoryJobStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["fake", "firestore"])
def store(request: pytest.FixtureRequest) -> Iterator[JobStore]:
    if request.param == "fake":
        yield InMemoryJobStore()
        return
    settings: Settings = request.getfixturevalue("cloud_settings")
    yield build_gateway(settings).jobs


def job(
    job_id: str,
    *,
    state: JobState = JobState.QUEUED,
    parent_id: str | None = None,
    deadline: datetime | None = None,
) -> Job:
    return Job(
        id=job_id,
        owner="alice",
        request=CustomVoiceRequest(text="hi", speaker="Vivian"),
        backend="home-4090",
        state=state,
        parent_id=parent_id,
        deadline=deadline,
        created_at=T0,
        updated_at=T0,
    )


def unique() -> str:
    return uuid.uuid4().hex[:12]


def test_children_are_counted_by_state_for_their_parent_only(store: JobStore) -> None:
    parent, other = unique(), unique()
    states = [JobState.SUCCEEDED, JobState.SUCCEEDED, JobState.FAILED, JobState.RUNNING]
    for index, state in enumerate(states):
        store.create(job(f"{parent}i{index}", state=state, parent_id=parent))
    store.create(job(f"{other}i0", state=JobState.SUCCEEDED, parent_id=other))
    store.create(job(unique(), state=JobState.SUCCEEDED))

    def count(*wanted: JobState) -> int:
        return store.count_children(parent_id=parent, states=frozenset(wanted))

    assert count(JobState.SUCCEEDED) == 2
    assert count(JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED) == 3
    assert count(JobState.QUEUED) == 0
    assert store.count_children(parent_id=unique(), states=frozenset(JobState)) == 0


def test_many_jobs_are_read_together_and_missing_ones_are_left_out(store: JobStore) -> None:
    ids = [unique() for _ in range(3)]
    for job_id in ids[:2]:
        store.create(job(job_id))
    found = store.get_many([*ids, ids[0]])
    assert sorted(found) == sorted(ids[:2])
    assert all(found[i].id == i for i in found)
    assert store.get_many([]) == {}


def test_an_update_reading_other_jobs_sees_them_as_stored(store: JobStore) -> None:
    parent, child, absent = unique(), unique(), unique()
    store.create(job(parent))
    store.create(job(child, state=JobState.FAILED, parent_id=parent))
    seen: dict[str, JobState] = {}

    def change(current: Job, others: Mapping[str, Job]) -> Job:
        seen.update({i: j.state for i, j in others.items()})
        return current.model_copy(update={"backend": "runpod"})

    updated = store.update_reading(parent, reading=[child, absent], change=change)
    assert seen == {child: JobState.FAILED}
    assert updated.backend == "runpod"
    stored = store.get(parent)
    assert stored is not None
    assert stored.backend == "runpod"


def test_overdue_jobs_are_the_open_ones_past_their_deadline_earliest_first(
    store: JobStore,
) -> None:
    # Far in the past, so jobs other tests left in the same collection cannot come first.
    base = datetime(2001, 1, 1, tzinfo=UTC)
    late, later, future = base, base + timedelta(seconds=5), base + timedelta(days=9000)
    ids = {name: unique() for name in ("queued", "running", "done", "future", "none")}
    store.create(job(ids["running"], state=JobState.RUNNING, deadline=later))
    store.create(job(ids["queued"], deadline=late))
    store.create(job(ids["done"], state=JobState.SUCCEEDED, deadline=late))
    store.create(job(ids["future"], deadline=future))
    store.create(job(ids["none"]))
    now = base + timedelta(seconds=10)
    found = [j.id for j in store.find_overdue(now=now, limit=10) if j.id in ids.values()]
    assert found == [ids["queued"], ids["running"]]
    assert [j.id for j in store.find_overdue(now=now, limit=1)] == [ids["queued"]]
