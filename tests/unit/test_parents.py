"""Batches and casts as parents: settled once from their children, canceled and retried whole.

Each test here failed on the design where every child counted itself into its parent's
document: the parent took one transactional write per child (a hot document that lost counts
under contention), a canceled batch ended ``failed``, and a retried parent was sent to routing
as if a worker could run it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from flask.testing import FlaskClient

from shared.domain.jobs import Job, JobState
from shared.usecases.gateway import Gateway
from shared.usecases.monitor import run_monitor
from tests.support.api import checked
from tests.support.backends import heartbeat
from tests.support.gateway import Fakes
from tests.support.worker import ScriptedWorker


def submit_batch(
    client: FlaskClient, headers: dict[str, str], texts: list[str], **extra: object
) -> str:
    items = [{"text": text, "speaker": "ryan"} for text in texts]
    response = checked(
        "POST",
        "/v1/tts/batch",
        client.post("/v1/tts/batch", json={"items": items, **extra}, headers=headers),
    )
    assert response.status_code == 202
    return response.json["id"]  # type: ignore[index,no-any-return]


def children(fakes: Fakes, parent_id: str) -> list[JobState]:
    found = [j for j in fakes.jobs.all() if j.parent_id == parent_id]
    return [j.state for j in sorted(found, key=lambda j: j.id)]


def state(fakes: Fakes, job_id: str) -> JobState:
    job = fakes.jobs.get(job_id)
    assert job is not None
    return job.state


def test_a_batch_finished_by_many_items_writes_its_parent_once_or_twice(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    ScriptedWorker(fakes, gateway=gateway)
    batch_id = submit_batch(client, alice, [f"Line {n}." for n in range(40)])
    for _ in range(3):
        fakes.clock.sleep(1)
    assert state(fakes, batch_id) is JobState.SUCCEEDED
    # Settled by the last item, its result message recorded as sent: never a write per item,
    # not even the first items' (which would all race to mark it running).
    assert fakes.jobs.writes[batch_id] == 2
    view = client.get(f"/v1/jobs/{batch_id}", headers=alice).json
    assert view["progress"]["succeeded"] == 40  # type: ignore[index]


def test_a_parent_is_running_in_its_view_once_a_child_has_started(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    batch_id = submit_batch(client, alice, ["One.", "Two."])
    assert client.get(f"/v1/jobs/{batch_id}", headers=alice).json["state"] == "queued"  # type: ignore[index]
    now = fakes.clock()
    first = f"{batch_id}i0"
    fakes.jobs.update(first, lambda j: j.claim("w9", backend=j.backend, now=now, lease_s=60))
    view = client.get(f"/v1/jobs/{batch_id}", headers=alice).json
    assert view["state"] == "running"  # type: ignore[index]
    assert fakes.jobs.writes[batch_id] == 0  # derived, not written


def test_a_parent_that_is_contended_is_settled_by_the_next_monitor_pass(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    ScriptedWorker(fakes, gateway=gateway)
    batch_id = submit_batch(client, alice, ["One.", "Two.", "Three."])
    fakes.jobs.contended.add(batch_id)
    for _ in range(3):
        fakes.clock.sleep(1)
    # Every item ended (no run crashed on the parent's contention); the parent waits.
    assert children(fakes, batch_id) == [JobState.SUCCEEDED] * 3
    assert state(fakes, batch_id) is JobState.QUEUED
    fakes.jobs.contended.clear()
    assert batch_id in run_monitor(gateway).settled
    assert state(fakes, batch_id) is JobState.SUCCEEDED


def test_canceling_a_batch_ends_it_canceled_with_its_unfinished_items(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    ScriptedWorker(fakes, gateway=gateway)
    batch_id = submit_batch(client, alice, ["One.", "Two.", "Three."])
    first = f"{batch_id}i0"
    now = fakes.clock()
    fakes.jobs.update(first, lambda j: j.claim("w9", backend=j.backend, now=now, lease_s=60))
    path = f"/v1/jobs/{batch_id}/cancel"
    response = checked("POST", path, client.post(path, headers=alice))
    assert response.status_code == 200
    assert response.json["state"] == "canceled"  # type: ignore[index]
    assert children(fakes, batch_id) == [JobState.CANCELED] * 3
    for _ in range(3):
        fakes.clock.sleep(1)
    run_monitor(gateway)
    assert state(fakes, batch_id) is JobState.CANCELED
    again = client.post(path, headers=alice)
    assert again.status_code == 409


def test_retrying_a_failed_batch_runs_its_failed_items_again_and_it_ends_well(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    worker = ScriptedWorker(fakes, gateway=gateway, fail_texts={"Two."})
    batch_id = submit_batch(client, alice, ["One.", "Two.", "Three."])
    for _ in range(3):
        fakes.clock.sleep(1)
    assert state(fakes, batch_id) is JobState.FAILED
    worker.fail_texts.clear()
    path = f"/v1/jobs/{batch_id}/retry"
    retried = checked("POST", path, client.post(path, headers=alice))
    assert retried.status_code == 202
    assert children(fakes, batch_id).count(JobState.QUEUED) == 1
    for _ in range(3):
        fakes.clock.sleep(1)
    assert state(fakes, batch_id) is JobState.SUCCEEDED
    assert children(fakes, batch_id) == [JobState.SUCCEEDED] * 3


def test_a_child_retried_while_its_parent_settles_never_leaves_the_parent_failed(
    client: FlaskClient,
    alice: dict[str, str],
    gateway: Gateway,
    fakes: Fakes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parent reads its children to settle; a child retried between that read and the
    parent's write would have had the parent fail over an item that runs again (and, once
    the item succeeded, stay failed). The children are read again inside the transaction."""
    worker = ScriptedWorker(fakes, gateway=gateway, fail_texts={"Two."})
    batch_id = submit_batch(client, alice, ["One.", "Two."])
    read_children = fakes.jobs.get_many
    retried: list[str] = []

    def then_retry(job_ids: Sequence[str]) -> dict[str, Job]:
        found = read_children(job_ids)
        failed = [j.id for j in found.values() if j.state is JobState.FAILED]
        if failed and not retried:
            worker.fail_texts.clear()
            retried.append(failed[0])
            path = f"/v1/jobs/{failed[0]}/retry"
            assert client.post(path, headers=alice).status_code == 202
        return found

    monkeypatch.setattr(fakes.jobs, "get_many", then_retry)
    for _ in range(4):
        fakes.clock.sleep(1)
    assert retried
    assert state(fakes, batch_id) is JobState.SUCCEEDED
    assert children(fakes, batch_id) == [JobState.SUCCEEDED] * 2


def test_retrying_a_canceled_batch_with_no_backend_refuses_and_moves_nothing(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    batch_id = submit_batch(client, alice, ["One.", "Two."])
    path = f"/v1/jobs/{batch_id}/cancel"
    checked("POST", path, client.post(path, headers=alice))
    # The only backend now offers another mode: no backend can run the items.
    fakes.backends.heartbeat(heartbeat(modes=("voice_design",)))
    path = f"/v1/jobs/{batch_id}/retry"
    refused = client.post(path, headers=alice)
    assert refused.status_code == 503
    assert state(fakes, batch_id) is JobState.CANCELED
    assert children(fakes, batch_id) == [JobState.CANCELED] * 2


def test_retrying_a_cast_runs_its_failed_children_and_never_routes_the_parent(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    worker = ScriptedWorker(fakes, gateway=gateway, fail_with="synthesis_failed")
    body = {
        "character": "Ann",
        "base_description": "A calm voice",
        "text": "Hello.",
        "items": [{"emotion": "happy"}, {"emotion": "sad"}],
    }
    cast = client.post("/v1/voices/cast", json=body, headers=alice)
    assert cast.status_code == 202
    cast_id = cast.json["id"]  # type: ignore[index]
    for _ in range(3):
        fakes.clock.sleep(1)
    assert state(fakes, cast_id) is JobState.FAILED
    worker.fail_with = None
    path = f"/v1/jobs/{cast_id}/retry"
    retried = checked("POST", path, client.post(path, headers=alice))
    assert retried.status_code == 202
    for _ in range(3):
        fakes.clock.sleep(1)
    assert state(fakes, cast_id) is JobState.SUCCEEDED


def test_a_batch_past_its_deadline_takes_its_items_with_it(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    headers = {**alice, "Cancel-After": "30s"}
    batch_id = submit_batch(client, headers, ["One.", "Two."])
    fakes.clock.advance(31)  # nobody ran anything
    report = run_monitor(gateway)
    assert batch_id in report.overdue
    assert state(fakes, batch_id) is JobState.CANCELED
    assert children(fakes, batch_id) == [JobState.CANCELED] * 2
