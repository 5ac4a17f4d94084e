"""The Firestore job store on the emulator: create-if-absent, transactions, the stored shape."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta

from shared.domain.errors import InvalidTransition
from shared.domain.jobs import JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import Settings
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from tests.support.contracts import validate_schema
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
