"""Batches over fakes: progress, a manifest, one failing item retried on its own."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from shared.domain.jobs import JobState
from shared.usecases.gateway import Gateway
from tests.support.api import checked
from tests.support.gateway import Fakes
from tests.support.worker import ScriptedWorker

ITEMS = [
    {"key": "ch1-0001", "text": "One.", "speaker": "ryan"},
    {"key": "ch1-0002", "text": "Two.", "speaker": "ryan", "format": "mp3"},
    {"key": "ch1-0003", "mode": "voice_design", "text": "Three.", "instruct": "a calm voice"},
]


def run_worker(fakes: Fakes, worker: ScriptedWorker, steps: int = 4) -> None:
    for _ in range(steps):
        fakes.clock.sleep(1)


def manifest(client: FlaskClient, headers: dict[str, str], batch_id: str) -> dict[str, object]:
    path = f"/v1/jobs/{batch_id}/manifest"
    response = checked("GET", path, client.get(path, headers=headers))
    assert response.status_code == 200
    return response.json  # type: ignore[no-any-return]


def result_states(fakes: Fakes, job_id: str) -> list[str]:
    return [
        json.loads(m.data)["state"]
        for m in fakes.publisher.messages
        if m.topic == "tts-results" and m.attributes["job_id"] == job_id
    ]


def test_a_batch_runs_its_items_reports_progress_and_retries_a_failed_one(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    worker = ScriptedWorker(fakes, gateway=gateway, fail_texts={"Two."})
    response = checked(
        "POST", "/v1/tts/batch", client.post("/v1/tts/batch", json={"items": ITEMS}, headers=alice)
    )
    assert response.status_code == 202
    batch = response.json
    assert batch["mode"] == "batch"  # type: ignore[index]
    batch_id = batch["id"]  # type: ignore[index]
    assert batch["progress"]["total"] == 3  # type: ignore[index]
    # Items are ordinary jobs, each routed and published on its own.
    assert len([m for m in fakes.publisher.messages if m.topic == "tts-jobs"]) == 3

    run_worker(fakes, worker)
    listed = manifest(client, alice, batch_id)
    assert listed["state"] == "failed"
    items = listed["items"]
    assert [i["key"] for i in items] == ["ch1-0001", "ch1-0002", "ch1-0003"]  # type: ignore[union-attr]
    assert [i["state"] for i in items] == ["succeeded", "failed", "succeeded"]  # type: ignore[union-attr]
    first, second, _ = items  # type: ignore[misc]
    assert first["audio_url"] == f"/v1/jobs/{first['job_id']}/audio"
    assert first["duration_s"] == 1.25
    assert second["audio_url"] is None
    assert second["error"]["code"] == "synthesis_failed"
    view = client.get(f"/v1/jobs/{batch_id}", headers=alice).json
    assert view["progress"] == {  # type: ignore[index]
        "total": 3,
        "succeeded": 2,
        "failed": 1,
        "children": [i["job_id"] for i in items],  # type: ignore[union-attr]
    }
    assert result_states(fakes, batch_id) == ["failed"]

    # The failed item alone runs again; the batch runs again with it, then ends well.
    worker.fail_texts.clear()
    path = f"/v1/jobs/{second['job_id']}/retry"
    retried = checked("POST", path, client.post(path, headers=alice))
    assert retried.status_code == 202
    assert fakes.jobs.get(batch_id).state is JobState.RUNNING  # type: ignore[union-attr]
    run_worker(fakes, worker)
    assert manifest(client, alice, batch_id)["state"] == "succeeded"
    assert result_states(fakes, batch_id) == ["failed", "succeeded"]
    again = checked("POST", path, client.post(path, headers=alice))
    assert again.status_code == 409  # it succeeded: nothing to retry


def test_a_resubmitted_batch_is_the_same_batch_and_keys_must_be_unique(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    headers = {**alice, "Idempotency-Key": "render-ch1"}
    first = client.post("/v1/tts/batch", json={"items": ITEMS}, headers=headers).json
    second = client.post("/v1/tts/batch", json={"items": ITEMS}, headers=headers).json
    assert first["id"] == second["id"]  # type: ignore[index]
    # The same three items: the second submission created nothing (it may publish the queued
    # ones again, in case a crashed first attempt never did; claims make that harmless).
    assert len([j for j in fakes.jobs.all() if j.parent_id == first["id"]]) == 3  # type: ignore[index]
    duplicate = [ITEMS[0], {**ITEMS[1], "key": "ch1-0001"}]
    refused = client.post("/v1/tts/batch", json={"items": duplicate}, headers=alice)
    assert refused.status_code == 422
    assert "unique" in refused.json["error"]["message"]  # type: ignore[index]


def test_a_manifest_is_only_for_batches(client: FlaskClient, alice: dict[str, str]) -> None:
    job_id = client.post(
        "/v1/tts/jobs", json={"text": "Hi.", "speaker": "ryan"}, headers=alice
    ).json["id"]  # type: ignore[index]
    assert manifest_status(client, alice, job_id) == 409


def manifest_status(client: FlaskClient, headers: dict[str, str], job_id: str) -> int:
    path = f"/v1/jobs/{job_id}/manifest"
    return checked("GET", path, client.get(path, headers=headers)).status_code


def test_a_manifest_reads_its_items_together_not_one_by_one(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [{"text": f"Line {n}.", "speaker": "ryan"} for n in range(50)]
    batch_id = client.post("/v1/tts/batch", json={"items": items}, headers=alice).json["id"]  # type: ignore[index]
    reads = {"get": 0, "get_many": 0}
    for name in reads:
        real = getattr(fakes.jobs, name)

        def counted(*args: object, _real: object = real, _name: str = name) -> object:
            reads[_name] += 1
            return _real(*args)  # type: ignore[operator]

        monkeypatch.setattr(fakes.jobs, name, counted)
    listed = manifest(client, alice, batch_id)
    assert len(listed["items"]) == 50  # type: ignore[arg-type]
    assert reads == {"get": 1, "get_many": 1}
