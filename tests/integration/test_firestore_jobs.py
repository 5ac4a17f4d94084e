"""The Firestore job store on the emulator: create-if-absent, transactions, the stored shape,
and the monitor's queries (held to the same answers as the in-memory fake)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.errors import InvalidTransition
from shared.domain.jobs import Job, JobState, Lease
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.domain.webhooks import Delivery, DeliveryState, Webhook, WebhookEvent
from shared.settings import Settings
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from shared.usecases.ports import JobStore
from tests.support.contracts import validate_schema
from tests.support.fakes import InMemoryJobStore
from tests.support.firestore import as_json, stored_job

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))


def test_submitted_job_round_trips_and_matches_its_schema(
    cloud_gateway: Gateway, cloud_settings: Settings
) -> None:
    request = CustomVoiceRequest(text="Hi", speaker="Aiden", instruct="warm")
    job = submit_job(cloud_gateway, principal=ALICE, request=request, idempotency_key="k1")
    assert cloud_gateway.jobs.get(job.id) == job

    raw = stored_job(cloud_settings, job.id)
    validate_schema("job-document.schema.json", as_json(raw))
    assert isinstance(raw["created_at"], datetime)  # stored as a timestamp, queryable by range

    again = submit_job(cloud_gateway, principal=ALICE, request=request, idempotency_key="k1")
    assert again == job


def test_concurrent_claims_have_exactly_one_winner(cloud_gateway: Gateway) -> None:
    job = submit_job(
        cloud_gateway, principal=ALICE, request=CustomVoiceRequest(text="Hi", speaker="Eric")
    )
    winners: list[str] = []
    losers: list[str] = []
    barrier = threading.Barrier(4)

    def claim(worker: str) -> None:
        barrier.wait()
        try:
            cloud_gateway.jobs.update(
                job.id,
                lambda j: j.claim(
                    worker, backend="home-4090", now=cloud_gateway.clock(), lease_s=60
                ),
            )
            winners.append(worker)
        except InvalidTransition:
            losers.append(worker)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert len(losers) == 3
    stored = cloud_gateway.jobs.get(job.id)
    assert stored is not None
    assert stored.state is JobState.RUNNING
    assert stored.lease is not None
    assert stored.lease.owner == winners[0]
    assert stored.attempts == 1


def test_a_backlog_larger_than_the_limit_yields_the_oldest_jobs_first(
    cloud_gateway: Gateway,
) -> None:
    """The monitor reads a limited page: the jobs that waited longest must be on it."""
    template = submit_job(
        cloud_gateway, principal=ALICE, request=CustomVoiceRequest(text="Hi", speaker="Eric")
    )
    backend = f"backlog-{uuid.uuid4().hex}"
    start = cloud_gateway.clock()
    # The newest job has the lowest id, so an unordered query (document-id order) would return
    # the newest jobs and this test would fail.
    for age in range(6):
        cloud_gateway.jobs.create(
            template.model_copy(
                update={
                    "id": f"{backend}-{age}",
                    "backend": backend,
                    "updated_at": start - timedelta(minutes=age),
                }
            )
        )
    oldest = cloud_gateway.jobs.find(state=JobState.QUEUED, backend=backend, limit=2)
    assert [job.id for job in oldest] == [f"{backend}-5", f"{backend}-4"]


# -- the monitor's sweeps -----------------------------------------------------------------------
# Each query selects only what may be acted on, and pages; the fake answers every case as the
# adapter does, so the monitor's unit tests over it show what the cloud does.

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["fake", "firestore"])
def jobs(request: pytest.FixtureRequest) -> Iterator[JobStore]:
    if request.param == "fake":
        yield InMemoryJobStore()
        return
    yield request.getfixturevalue("cloud_gateway").jobs


def stored(store: JobStore, job_id: str, **update: object) -> None:
    job = Job(
        id=job_id,
        owner="alice",
        request=CustomVoiceRequest(text="Hi", speaker="Eric"),
        backend="home-4090",
        created_at=NOW - timedelta(hours=2),
        updated_at=NOW - timedelta(hours=1),
    )
    store.create(job.model_copy(update=update))


def every_page(page: Callable[[Job | None], list[Job]]) -> list[list[str]]:
    """The pages a sweep reads, each starting after the last job of the one before."""
    pages: list[list[str]] = []
    after: Job | None = None
    while batch := page(after):
        pages.append([job.id for job in batch])
        after = batch[-1]
    return pages


def test_find_pages_by_update_time_then_id_up_to_a_cutoff(jobs: JobStore) -> None:
    ages = {"a": 5, "b": 3, "c": 3, "d": 3, "e": 1, "recent": 0}  # b, c, d tie on updated_at
    for name, age in ages.items():
        stored(jobs, name, updated_at=NOW - timedelta(minutes=age))
    stored(jobs, "elsewhere", backend="runpod", updated_at=NOW - timedelta(minutes=9))
    stored(jobs, "running", state=JobState.RUNNING, updated_at=NOW - timedelta(minutes=9))
    pages = every_page(
        lambda after: jobs.find(
            state=JobState.QUEUED,
            backend="home-4090",
            limit=2,
            updated_before=NOW - timedelta(seconds=30),
            start_after=after,
        )
    )
    assert pages == [["a", "b"], ["c", "d"], ["e"]]


def test_results_and_replies_still_owed_are_found_apart_after_their_grace(
    jobs: JobStore,
) -> None:
    ended = {"state": JobState.SUCCEEDED, "updated_at": NOW - timedelta(minutes=5)}
    stored(jobs, "both-1", result_pending=True, reply_pending=True, **ended)
    stored(jobs, "both-2", result_pending=True, reply_pending=True, **ended)
    stored(jobs, "result", result_pending=True, **ended)
    stored(jobs, "reply", reply_pending=True, **ended)
    stored(jobs, "nothing", **ended)
    fresh = {**ended, "updated_at": NOW}  # within the grace: its publisher may only be slow
    stored(jobs, "fresh", result_pending=True, reply_pending=True, **fresh)
    cutoff = NOW - timedelta(seconds=30)
    results = every_page(
        lambda after: jobs.find_unannounced(updated_before=cutoff, limit=2, start_after=after)
    )
    assert results == [["both-1", "both-2"], ["result"]]
    replies = every_page(
        lambda after: jobs.find_replies_pending(updated_before=cutoff, limit=2, start_after=after)
    )
    assert replies == [["both-1", "both-2"], ["reply"]]


def test_webhooks_due_are_found_by_their_due_time_not_their_age(jobs: JobStore) -> None:
    def hook(*deliveries: Delivery) -> Webhook:
        return Webhook(url="https://hooks.example.com/tts", deliveries=deliveries)

    def due(minutes: int, state: DeliveryState = DeliveryState.PENDING) -> Delivery:
        at = NOW + timedelta(minutes=minutes)
        return Delivery(event=WebhookEvent.COMPLETED, state=state, next_at=at, queued_at=at)

    oldest = NOW - timedelta(hours=1)
    stored(jobs, "later", webhook=hook(due(5)), updated_at=oldest)
    stored(jobs, "delivered", webhook=hook(due(-9, DeliveryState.DELIVERED)), updated_at=oldest)
    stored(jobs, "now-2", webhook=hook(due(-1)), updated_at=NOW)
    stored(jobs, "now-1", webhook=hook(due(-2), due(5)), updated_at=NOW)
    stored(jobs, "now-3", webhook=hook(due(0)), updated_at=NOW)
    stored(jobs, "no-hook", updated_at=oldest)
    pages = every_page(lambda after: jobs.find_webhooks_due(now=NOW, limit=2, start_after=after))
    assert pages == [["now-1", "now-2"], ["now-3"]]


def test_expired_leases_are_found_by_their_expiry(jobs: JobStore) -> None:
    def lease(minutes: int) -> Lease:
        return Lease(owner="w1", expires_at=NOW + timedelta(minutes=minutes))

    stored(jobs, "live", state=JobState.RUNNING, lease=lease(1))
    stored(jobs, "parent", state=JobState.RUNNING, lease=None)  # a parent holds none
    stored(jobs, "out-2", state=JobState.RUNNING, lease=lease(-1))
    stored(jobs, "out-1", state=JobState.RUNNING, lease=lease(-3))
    stored(jobs, "out-3", state=JobState.RUNNING, lease=lease(-1))
    stored(jobs, "queued", state=JobState.QUEUED, lease=lease(-5))
    pages = every_page(lambda after: jobs.find_expired_leases(now=NOW, limit=2, start_after=after))
    assert pages == [["out-1", "out-2"], ["out-3"]]


def test_runpod_cancels_are_found_until_done(jobs: JobStore) -> None:
    for name in ("rp-a", "rp-b", "rp-c"):
        stored(jobs, name, state=JobState.CANCELED, backend="runpod", runpod_id=f"x-{name}")
    stored(jobs, "rp-done", state=JobState.CANCELED, backend="runpod", runpod_id=None)
    stored(jobs, "rp-running", state=JobState.RUNNING, backend="runpod", runpod_id="x")
    pages = every_page(lambda after: jobs.find_runpod_cancels(limit=2, start_after=after))
    assert pages == [["rp-a", "rp-b"], ["rp-c"]]
    jobs.update("rp-a", lambda j: j.runpod_canceled())
    assert [j.id for j in jobs.find_runpod_cancels(limit=9)] == ["rp-b", "rp-c"]
