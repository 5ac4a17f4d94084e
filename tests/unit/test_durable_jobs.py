"""Jobs that end tell someone, can be canceled, keep deadlines, and can be listed (over fakes)."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from gpu_worker.runner import JobRunner, Outcome, RunnerConfig
from gpu_worker.tasks import Task
from shared.domain.errors import InvalidRequest
from shared.domain.jobs import JobOutput, JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import Settings
from shared.usecases import completion
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import cancel_job, submit_job
from shared.usecases.monitor import run_monitor
from shared.wire.bodies import JobOptions
from shared.wire.messages import JobMessage
from tests.support.api import GOOD, checked
from tests.support.contracts import validate_schema
from tests.support.gateway import Fakes, fake_gateway

ALICE = Principal(
    owner="alice",
    scopes=frozenset({Scope.USER}),
    reply_topics=frozenset({"pipeline-a", "gone", "flaky"}),  # her key's own (functions.keys)
)


class Instant:
    def __init__(self) -> None:
        self.runs = 0

    def execute(self, task: Task) -> JobOutput:
        self.runs += 1
        return JobOutput()


def runner(gw: Gateway, executor: Instant) -> JobRunner:
    config = RunnerConfig(worker_id="w1", backend_id="home-4090", lease_s=60)
    return JobRunner(gateway=gw, executor=executor, config=config)


def results(fakes: Fakes) -> list[dict[str, object]]:
    found = []
    for message in fakes.publisher.messages:
        if message.topic == "tts-results":
            body = json.loads(message.data)
            validate_schema("job-result.schema.json", body)
            found.append({"body": body, "attributes": message.attributes})
    return found


def submit(gw: Gateway, **options: object) -> str:
    request = CustomVoiceRequest(text="Hi.", speaker="ryan")
    job = submit_job(gw, principal=ALICE, request=request, options=JobOptions(**options))
    return job.id


def test_a_finished_job_publishes_one_result_with_its_correlation(
    gateway: Gateway, fakes: Fakes
) -> None:
    job_id = submit(gateway, correlation={"book": "moby-dick", "chapter": "7"})
    assert runner(gateway, Instant()).run(JobMessage(job_id=job_id)).outcome is Outcome.SUCCEEDED
    # A redelivered message finds the job finished: nothing moves, nothing is published again.
    runner(gateway, Instant()).run(JobMessage(job_id=job_id))
    [result] = results(fakes)
    assert result["body"]["job_id"] == job_id  # type: ignore[index]
    assert result["body"]["state"] == "succeeded"  # type: ignore[index]
    assert result["attributes"] == {
        "book": "moby-dick",
        "chapter": "7",
        "job_id": job_id,
        "state": "succeeded",
        "owner": "alice",
        "announcement_id": f"{job_id}.1",
    }
    assert result["body"]["announcement_id"] == f"{job_id}.1"  # type: ignore[index]
    stored = fakes.jobs.get(job_id)
    assert stored is not None
    assert not stored.result_pending


def test_a_result_lost_with_its_publisher_is_published_by_the_monitor_once(
    gateway: Gateway, fakes: Fakes
) -> None:
    job_id = submit(gateway)
    fakes.publisher.failures = 1  # the results topic is down at the moment the job ends
    runner(gateway, Instant()).run(JobMessage(job_id=job_id))
    assert results(fakes) == []
    assert fakes.jobs.get(job_id).result_pending  # type: ignore[union-attr]
    run_monitor(gateway)  # within the grace: the publisher may only be slow
    assert results(fakes) == []
    fakes.clock.advance(gateway.settings.monitor.announce_grace_s)
    assert run_monitor(gateway).announced == [job_id]
    run_monitor(gateway)
    assert len(results(fakes)) == 1


def test_a_reply_topic_must_be_one_of_the_keys_within_the_deployments(fakes: Fakes) -> None:
    allowed = ("pipeline-a", "someone-elses-topic")
    gw = fake_gateway(Settings(bucket="test-bucket", reply_topics=allowed), fakes)
    job_id = submit(gw, reply_topic="pipeline-a")
    runner(gw, Instant()).run(JobMessage(job_id=job_id))
    topics = sorted(m.topic for m in fakes.publisher.messages if m.topic != "tts-jobs")
    assert topics == ["pipeline-a", "tts-results"]
    # The deployment may publish there, but it is another owner's: not on Alice's key.
    with pytest.raises(
        InvalidRequest, match="'someone-elses-topic' is not one of this key's reply topics"
    ):
        submit(gw, reply_topic="someone-elses-topic")
    # On her key, but no longer the deployment's (its grant is gone).
    with pytest.raises(InvalidRequest, match="'gone' is not one of this key's reply topics"):
        submit(gw, reply_topic="gone")


def test_a_reply_topic_that_is_gone_never_holds_back_the_results_topic(
    fakes: Fakes, caplog: pytest.LogCaptureFixture
) -> None:
    gw = fake_gateway(Settings(bucket="test-bucket", reply_topics=("gone",)), fakes)
    fakes.publisher.missing.add("gone")  # deleted by its owner after the job was submitted
    job_id = submit(gw, reply_topic="gone")
    runner(gw, Instant()).run(JobMessage(job_id=job_id))
    for _ in range(8):  # more passes than the reply topic has tries
        fakes.clock.advance(60)
        run_monitor(gw)
    # Once on the results topic, not once a minute for the life of the job.
    assert len(results(fakes)) == 1
    tries = gw.settings.monitor.reply_attempts
    job = fakes.jobs.get(job_id)
    assert job is not None
    assert (job.result_pending, job.reply_pending, job.reply_failures) == (False, False, tries)
    assert job.reply_error == f"given up after {tries} attempts: topic gone does not exist (fake)"
    given_up = [r for r in caplog.records if r.getMessage() == "reply topic given up"]
    assert [r.job_id for r in given_up] == [job_id]  # type: ignore[attr-defined]


def test_a_reply_topic_back_within_its_tries_gets_the_result_once(fakes: Fakes) -> None:
    gw = fake_gateway(Settings(bucket="test-bucket", reply_topics=("flaky",)), fakes)
    fakes.publisher.missing.add("flaky")
    job_id = submit(gw, reply_topic="flaky")
    runner(gw, Instant()).run(JobMessage(job_id=job_id))  # the first try fails
    fakes.clock.advance(gw.settings.monitor.announce_grace_s)
    run_monitor(gw)  # the second
    fakes.publisher.missing.clear()
    assert run_monitor(gw).announced == [job_id]
    run_monitor(gw)
    replies = [m for m in fakes.publisher.messages if m.topic == "flaky"]
    assert [m.attributes["job_id"] for m in replies] == [job_id]
    job = fakes.jobs.get(job_id)
    assert job is not None
    assert (job.reply_pending, job.reply_failures, job.reply_error) == (False, 2, None)
    assert len(results(fakes)) == 1


def test_each_ending_has_its_own_announcement_id_which_every_copy_repeats(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    job_id = client.post("/v1/tts/jobs", json=GOOD, headers=alice).json["id"]  # type: ignore[index]
    client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)
    # The process that published died before it recorded that it had: the monitor publishes
    # a copy, which a subscriber must recognise as the same announcement.
    fakes.jobs.update(job_id, lambda j: j.model_copy(update={"result_pending": True}))
    fakes.clock.advance(gateway.settings.monitor.announce_grace_s)
    assert run_monitor(gateway).announced == [job_id]
    retried = client.post(f"/v1/jobs/{job_id}/retry", headers=alice)
    assert retried.status_code == 202, retried.json
    runner(gateway, Instant()).run(JobMessage(job_id=job_id))
    sent = results(fakes)
    assert [r["body"]["state"] for r in sent] == ["canceled", "canceled", "succeeded"]  # type: ignore[index]
    ids = [r["body"]["announcement_id"] for r in sent]  # type: ignore[index]
    assert ids == [r["attributes"]["announcement_id"] for r in sent]  # type: ignore[index]
    # The retry started attempt 1 and the claim attempt 2: each ending its own number.
    assert ids == [f"{job_id}.0", f"{job_id}.0", f"{job_id}.2"]


def test_a_retried_job_that_ends_again_before_any_claim_is_announced_under_a_new_id(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    job_id = client.post("/v1/tts/jobs", json=GOOD, headers=alice).json["id"]  # type: ignore[index]
    for _ in range(2):
        client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)
        client.post(f"/v1/jobs/{job_id}/retry", headers=alice)
    ids = [r["body"]["announcement_id"] for r in results(fakes)]  # type: ignore[index]
    assert ids == [f"{job_id}.0", f"{job_id}.1"]


def test_a_queued_job_canceled_never_runs_and_a_finished_one_is_409(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    job_id = client.post("/v1/tts/jobs", json=GOOD, headers=alice).json["id"]  # type: ignore[index]
    path = f"/v1/jobs/{job_id}/cancel"
    canceled = checked("POST", path, client.post(path, headers=alice))
    assert canceled.status_code == 200
    assert canceled.json["state"] == "canceled"  # type: ignore[index]
    assert canceled.json["error"]["code"] == "canceled"  # type: ignore[index]
    executor = Instant()
    assert runner(gateway, executor).run(JobMessage(job_id=job_id)).outcome is Outcome.SKIPPED
    assert executor.runs == 0
    assert [r["body"]["state"] for r in results(fakes)] == ["canceled"]  # type: ignore[index]
    again = checked("POST", path, client.post(path, headers=alice))
    assert again.status_code == 409


def test_a_running_job_canceled_keeps_no_result(gateway: Gateway, fakes: Fakes) -> None:
    job_id = submit(gateway)

    class CanceledMidway(Instant):
        def execute(self, task: Task) -> JobOutput:
            cancel_job(gateway, principal=ALICE, job_id=task.id)  # the owner, meanwhile
            return JobOutput()

    outcome = runner(gateway, CanceledMidway()).run(JobMessage(job_id=job_id))
    assert outcome.outcome is Outcome.SKIPPED  # its result is discarded: the lease is gone
    assert fakes.jobs.get(job_id).state is JobState.CANCELED  # type: ignore[union-attr]
    assert len(results(fakes)) == 1


def test_deadlines_cancel_jobs_that_would_run_late(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    response = client.post("/v1/tts/jobs", json=GOOD, headers={**alice, "Cancel-After": "2m"})
    late_id = response.json["id"]  # type: ignore[index]
    body = {**GOOD, "deadline_s": 30}
    waiting_id = client.post("/v1/tts/jobs", json=body, headers=alice).json["id"]  # type: ignore[index]
    fakes.clock.advance(60)
    # The monitor ends a job still waiting (its backend may be down) once its deadline passes.
    assert run_monitor(gateway).overdue == [waiting_id]
    # A worker that gets to a job past its deadline cancels it instead of running it.
    fakes.clock.advance(90)
    executor = Instant()
    assert runner(gateway, executor).run(JobMessage(job_id=late_id)).outcome is Outcome.SKIPPED
    assert executor.runs == 0
    late = fakes.jobs.get(late_id)
    assert late is not None
    assert (late.state, late.error.code) == (JobState.CANCELED, "deadline_exceeded")  # type: ignore[union-attr]
    assert not completion.cancel_overdue(gateway, late_id)  # once only


def test_jobs_are_listed_by_owner_state_and_time_in_pages(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    ids = []
    for _ in range(5):
        ids.append(client.post("/v1/tts/jobs", json=GOOD, headers=alice).json["id"])  # type: ignore[index]
        fakes.clock.advance(1)
    client.post(f"/v1/jobs/{ids[1]}/cancel", headers=alice)
    seen, token = [], None
    while True:
        query = "/v1/jobs?page_size=2" + (f"&page_token={token}" if token else "")
        page = checked("GET", "/v1/jobs", client.get(query, headers=alice)).json
        seen += [j["id"] for j in page["jobs"]]  # type: ignore[index]
        token = page["next_page_token"]  # type: ignore[index]
        if not token:
            break
    assert seen == ids
    canceled = client.get("/v1/jobs?state=canceled", headers=alice).json
    assert [j["id"] for j in canceled["jobs"]] == [ids[1]]  # type: ignore[index]
    after = fakes.jobs.get(ids[2]).created_at.isoformat()  # type: ignore[union-attr]
    later = client.get("/v1/jobs", query_string={"created_after": after}, headers=alice).json
    assert [j["id"] for j in later["jobs"]] == ids[3:]  # type: ignore[index]
    other = client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert other.status_code == 401
