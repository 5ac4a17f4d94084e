"""The RunPod path over fakes: dispatch, webhook completion, and each RunPod failure mode."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.domain.backends import BackendConfig, BackendKind
from shared.domain.errors import (
    BackendUnavailable,
    RunPodJobGone,
    RunPodRejected,
    Unauthenticated,
)
from shared.domain.jobs import AudioResult, Job, JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest, JoinRequest, JoinSource
from shared.settings import RunPodSettings, Settings
from shared.usecases.dispatch import (
    Completion,
    Dispatch,
    complete,
    dispatch,
    verify_webhook,
    webhook_token,
)
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import cancel_job, submit_job
from shared.usecases.monitor import run_monitor
from shared.usecases.new_jobs import new_job
from shared.wire.messages import JobMessage
from shared.wire.runpod_io import RunPodFailure, RunPodInput, RunPodOutput
from shared.wire.runpod_status import RunPodStatus
from tests.support.fakes import FakeRunPod
from tests.support.gateway import Fakes, fake_gateway

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))
RUNPOD_ONLY = (BackendConfig(id="runpod", kind=BackendKind.RUNPOD, priority=20),)


@pytest.fixture
def gw(fakes: Fakes) -> Gateway:
    settings = Settings(
        bucket="test-bucket",
        backends=RUNPOD_ONLY,
        runpod=RunPodSettings(
            endpoint_id="ep1",
            api_key="k",  # type: ignore[arg-type]
            webhook_url="https://hooks.example/runpod",
            webhook_secret="s3cret",  # type: ignore[arg-type]
        ),
    )
    return fake_gateway(settings, fakes)


def submitted(gw: Gateway) -> Job:
    return submit_job(gw, principal=ALICE, request=CustomVoiceRequest(text="Hi.", speaker="ryan"))


def stored(gw: Gateway, job: Job) -> Job:
    current = gw.jobs.get(job.id)
    assert current is not None
    return current


def finished_output(job: Job) -> dict[str, object]:
    audio = AudioResult(
        uri=f"gs://test-bucket/audio/{job.id}.wav", format="wav", content_type="audio/wav",
        sample_rate=24000, duration_s=1.0, bytes=48044,
    )  # fmt: skip
    return RunPodOutput(job_id=job.id, audio=audio).model_dump(mode="json")


def test_a_dispatch_signs_only_what_the_task_needs_and_records_runpods_id(gw: Gateway) -> None:
    runpod = FakeRunPod()
    job = submitted(replace(gw, new_id=lambda: "job1"))
    assert dispatch(gw, runpod, JobMessage(job_id=job.id)) is Dispatch.DISPATCHED
    sent = runpod.submitted[0]
    task = RunPodInput.model_validate(sent["payload"])
    assert task.task.id == "job1"
    assert task.urls.audio is not None
    assert "method=PUT" in task.urls.audio
    assert (task.urls.reference, task.urls.prompt, task.urls.voice_prompt) == (None, None, None)
    # HMAC-SHA256 of "job1" under the secret "s3cret", worked out once outside the code.
    assert sent["webhook"] == (
        "https://hooks.example/runpod?job=job1"
        "&token=bd54655c48eaa0e42fc9f6fd40d1949ffdecbc275e1190a42639c5419f8913c4"
    )
    assert "s3cret" not in str(sent)
    running = stored(gw, job)
    assert (running.state, running.runpod_id) == (JobState.RUNNING, "rp-1")
    # A duplicate delivery of the same message does not submit twice.
    assert dispatch(gw, runpod, JobMessage(job_id=job.id)) is Dispatch.SKIPPED
    assert len(runpod.submitted) == 1


def test_a_streamed_job_gets_its_part_urls_and_no_other_job_does(gw: Gateway) -> None:
    runpod = FakeRunPod()
    plain = submitted(gw)
    streamed = submit_job(
        gw,
        principal=ALICE,
        request=CustomVoiceRequest(text="Hi.", speaker="ryan", format="mp3", stream=True),
    )
    for job in (plain, streamed):
        dispatch(gw, runpod, JobMessage(job_id=job.id))
    first, second = (RunPodInput.model_validate(s["payload"]) for s in runpod.submitted)
    assert first.urls.parts == ()
    parts = second.urls.parts
    assert len(parts) == gw.settings.runpod.stream_parts
    assert all("method=PUT" in url for url in parts)
    assert f"audio/{streamed.id}/1/part-00000.mp3" in parts[0]
    assert f"audio/{streamed.id}/1/part-00015.mp3" in parts[-1]


def test_the_webhook_finishes_the_job_exactly_once(gw: Gateway) -> None:
    runpod = FakeRunPod()
    job = submitted(gw)
    dispatch(gw, runpod, JobMessage(job_id=job.id))
    status = RunPodStatus(id="rp-1", status="COMPLETED", output=finished_output(job))
    assert complete(gw, job_id=job.id, status=status) is Completion.SUCCEEDED
    assert complete(gw, job_id=job.id, status=status) is Completion.STALE  # RunPod's retry
    done = stored(gw, job)
    assert done.state is JobState.SUCCEEDED
    assert done.result is not None
    assert done.result.duration_s == 1.0


def test_a_webhook_for_another_runpod_job_is_ignored(gw: Gateway) -> None:
    job = submitted(gw)
    dispatch(gw, FakeRunPod(), JobMessage(job_id=job.id))
    stale = RunPodStatus(id="rp-old", status="COMPLETED", output=finished_output(job))
    assert complete(gw, job_id=job.id, status=stale) is Completion.STALE
    assert stored(gw, job).state is JobState.RUNNING


def test_a_webhook_with_a_bad_secret_is_refused(gw: Gateway) -> None:
    job = submitted(gw)
    verify_webhook(gw, job_id=job.id, token=webhook_token(gw, job.id))
    with pytest.raises(Unauthenticated):
        verify_webhook(gw, job_id=job.id, token="0" * 64)
    other = submitted(gw)
    with pytest.raises(Unauthenticated):  # a token is good for its own job only
        verify_webhook(gw, job_id=other.id, token=webhook_token(gw, job.id))


@pytest.mark.parametrize("status", [429, 500, 503])
def test_runpod_overload_releases_the_job_then_fails_it_after_the_attempts(
    gw: Gateway, status: int
) -> None:
    error = BackendUnavailable(f"RunPod answered {status}", details={"status": status})
    runpod = FakeRunPod(failures=[error] * 3)
    job = submitted(gw)
    message = JobMessage(job_id=job.id)
    assert dispatch(gw, runpod, message) is Dispatch.RETRY  # Pub/Sub redelivers
    assert stored(gw, job).state is JobState.QUEUED
    assert dispatch(gw, runpod, message) is Dispatch.RETRY
    assert dispatch(gw, runpod, message) is Dispatch.FAILED  # max_attempts = 3
    failed = stored(gw, job)
    assert failed.state is JobState.FAILED
    assert failed.error is not None
    assert f"RunPod answered {status}" in failed.error.message
    assert failed.error.message.startswith("gave up after 3 attempts")


def test_a_timeout_then_success_dispatches_on_redelivery(gw: Gateway) -> None:
    runpod = FakeRunPod(failures=[BackendUnavailable("run: ReadTimeout")])
    job = submitted(gw)
    assert dispatch(gw, runpod, JobMessage(job_id=job.id)) is Dispatch.RETRY
    assert dispatch(gw, runpod, JobMessage(job_id=job.id)) is Dispatch.DISPATCHED
    assert stored(gw, job).attempts == 2


def test_runpod_rejecting_the_request_fails_the_job_at_once(gw: Gateway) -> None:
    runpod = FakeRunPod(failures=[RunPodRejected("RunPod refused: HTTP 401")])
    job = submitted(gw)
    assert dispatch(gw, runpod, JobMessage(job_id=job.id)) is Dispatch.FAILED
    assert stored(gw, job).state is JobState.FAILED


def test_a_webhook_that_never_arrives_is_replaced_by_polling(gw: Gateway, fakes: Fakes) -> None:
    runpod = FakeRunPod()
    job = submitted(gw)
    dispatch(gw, runpod, JobMessage(job_id=job.id))
    assert run_monitor(gw, runpod=runpod).polled == {}  # within the grace period
    fakes.clock.advance(gw.settings.monitor.webhook_grace_s + 1)
    assert run_monitor(gw, runpod=runpod).polled == {job.id: "pending"}
    runpod.statuses["rp-1"] = RunPodStatus(
        id="rp-1", status="COMPLETED", output=finished_output(job)
    )
    assert run_monitor(gw, runpod=runpod).polled == {job.id: "succeeded"}
    assert stored(gw, job).state is JobState.SUCCEEDED


def test_a_job_runpod_purged_is_run_again_and_other_errors_do_not_stop_the_pass(
    gw: Gateway, fakes: Fakes
) -> None:
    runpod = FakeRunPod()
    purged, refused, finished = submitted(gw), submitted(gw), submitted(gw)
    for job in (purged, refused, finished):
        dispatch(gw, runpod, JobMessage(job_id=job.id))
    runpod.status_errors["rp-1"] = RunPodJobGone("RunPod status answered HTTP 404")
    runpod.status_errors["rp-2"] = RunPodRejected("RunPod status answered HTTP 401")
    runpod.statuses["rp-3"] = RunPodStatus(
        id="rp-3", status="COMPLETED", output=finished_output(finished)
    )
    fakes.clock.advance(gw.settings.monitor.webhook_grace_s + 1)

    report = run_monitor(gw, runpod=runpod)

    assert report.polled == {purged.id: "retried", finished.id: "succeeded"}
    again = stored(gw, purged)
    assert (again.state, again.runpod_id) == (JobState.QUEUED, None)
    assert again.error is not None
    assert again.error.code == "runpod_job_gone"
    sent = [m.data for m in fakes.publisher.messages if m.topic == gw.settings.jobs_topic]
    assert sent.count(JobMessage(job_id=purged.id).encode()) == 2  # sent for another dispatch
    assert stored(gw, refused).state is JobState.RUNNING  # waits for the next pass


def test_the_lease_covers_the_call_then_runpods_own_limits(gw: Gateway) -> None:
    """If the dispatcher dies inside the call, the monitor frees the job minutes later."""

    class DiesMidCall(FakeRunPod):
        def run(self, **kwargs: object) -> str:
            leased = stored(gw, job).lease
            assert leased is not None
            seen.append((leased.expires_at - gw.clock()).total_seconds())
            return super().run(**kwargs)  # type: ignore[arg-type]

    seen: list[float] = []
    job = submitted(gw)
    dispatch(gw, DiesMidCall(), JobMessage(job_id=job.id))
    rp = gw.settings.runpod
    assert seen == [rp.call_budget_s + 120]
    lease = stored(gw, job).lease
    assert lease is not None
    assert (
        lease.expires_at - gw.clock()
    ).total_seconds() == rp.ttl_s + rp.execution_timeout_s + 120


def test_a_retryable_task_failure_is_dispatched_again(gw: Gateway, fakes: Fakes) -> None:
    runpod = FakeRunPod()
    job = submitted(gw)
    dispatch(gw, runpod, JobMessage(job_id=job.id))
    failure = RunPodFailure(code="unavailable", message="GPU out of memory", retryable=True)
    output = RunPodOutput(job_id=job.id, failure=failure).model_dump(mode="json")
    status = RunPodStatus(id="rp-1", status="COMPLETED", output=output)
    published = len(fakes.publisher.messages)
    assert complete(gw, job_id=job.id, status=status) is Completion.RETRIED
    assert stored(gw, job).state is JobState.QUEUED
    assert len(fakes.publisher.messages) == published + 1


@pytest.mark.parametrize("runpod_status", ["FAILED", "TIMED_OUT", "CANCELLED"])
def test_a_broken_runpod_worker_counts_as_a_transient_failure(
    gw: Gateway, runpod_status: str
) -> None:
    job = submitted(gw)
    dispatch(gw, FakeRunPod(), JobMessage(job_id=job.id))
    status = RunPodStatus(id="rp-1", status=runpod_status, error="worker died")
    assert complete(gw, job_id=job.id, status=status) is Completion.RETRIED


def test_a_permanent_task_failure_fails_the_job(gw: Gateway) -> None:
    job = submitted(gw)
    dispatch(gw, FakeRunPod(), JobMessage(job_id=job.id))
    failure = RunPodFailure(code="synthesis_failed", message="bad input", retryable=False)
    output = RunPodOutput(job_id=job.id, failure=failure).model_dump(mode="json")
    status = RunPodStatus(id="rp-1", status="COMPLETED", output=output)
    assert complete(gw, job_id=job.id, status=status) is Completion.FAILED
    failed = stored(gw, job)
    assert failed.error is not None
    assert failed.error.code == "synthesis_failed"


def test_an_output_for_another_gateway_job_is_never_applied(gw: Gateway) -> None:
    job, other = submitted(gw), submitted(gw)
    dispatch(gw, FakeRunPod(), JobMessage(job_id=job.id))
    status = RunPodStatus(id="rp-1", status="COMPLETED", output=finished_output(other))
    assert complete(gw, job_id=job.id, status=status) is Completion.STALE
    assert stored(gw, job).state is JobState.RUNNING


def test_a_job_canceled_while_on_runpod_is_canceled_there_by_the_monitor(gw: Gateway) -> None:
    runpod = FakeRunPod()
    job = submitted(gw)
    dispatch(gw, runpod, JobMessage(job_id=job.id))
    cancel_job(gw, principal=ALICE, job_id=job.id)
    assert run_monitor(gw, runpod=runpod).runpod_canceled == [job.id]
    assert runpod.canceled == ["rp-1"]
    assert run_monitor(gw, runpod=runpod).runpod_canceled == []  # once
    # The RunPod job's late result is refused: the gateway job stays canceled.
    status = RunPodStatus(id="rp-1", status="COMPLETED", output=finished_output(job))
    assert complete(gw, job_id=job.id, status=status) is Completion.STALE
    assert stored(gw, job).state is JobState.CANCELED


def test_a_join_is_sent_with_a_read_url_for_each_item_in_order(gw: Gateway) -> None:
    sources = tuple(JoinSource(path=f"audio/item{i}.mp3", bytes=100 + i) for i in range(3))
    job = gw.jobs.create(
        new_job(
            gw,
            job_id="batch1j",
            principal=ALICE,
            request=JoinRequest(sources=sources, format="mp3"),  # type: ignore[arg-type]
            backend="runpod",
            key=None,
            parent_id="batch1",
        )
    )[0]
    runpod = FakeRunPod()
    assert dispatch(gw, runpod, JobMessage(job_id=job.id)) is Dispatch.DISPATCHED
    task = RunPodInput.model_validate(runpod.submitted[0]["payload"])
    assert len(task.urls.sources) == 3
    for index, url in enumerate(task.urls.sources):
        assert f"audio/item{index}.mp3" in url
        assert "method=PUT" not in url
    assert task.urls.audio is not None
    assert "audio/batch1j/1.mp3" in task.urls.audio


def test_where_a_runpod_result_lies_is_derived_from_the_job_never_taken_from_the_worker(
    gw: Gateway,
) -> None:
    runpod = FakeRunPod()
    job = submitted(gw)
    dispatch(gw, runpod, JobMessage(job_id=job.id))
    # A compromised worker names another owner's object as this job's audio.
    audio = AudioResult(
        uri="gs://test-bucket/voices/someone-elses.wav", format="wav", content_type="text/html",
        sample_rate=24000, duration_s=1.0, bytes=48044,
    )  # fmt: skip
    output = RunPodOutput(job_id=job.id, audio=audio).model_dump(mode="json")
    status = RunPodStatus(id="rp-1", status="COMPLETED", output=output)
    assert complete(gw, job_id=job.id, status=status) is Completion.SUCCEEDED
    done = stored(gw, job)
    assert done.result is not None
    assert done.result.uri == f"gs://test-bucket/audio/{job.id}/1.wav"
    assert done.result.content_type == "audio/wav"


def test_a_runpod_result_in_another_format_than_asked_fails_the_job(gw: Gateway) -> None:
    runpod = FakeRunPod()
    job = submitted(gw)
    dispatch(gw, runpod, JobMessage(job_id=job.id))
    audio = AudioResult(
        uri=f"gs://test-bucket/audio/{job.id}/1.mp3", format="mp3", content_type="audio/mpeg",
        sample_rate=24000, duration_s=1.0, bytes=100,
    )  # fmt: skip
    output = RunPodOutput(job_id=job.id, audio=audio).model_dump(mode="json")
    status = RunPodStatus(id="rp-1", status="COMPLETED", output=output)
    assert complete(gw, job_id=job.id, status=status) is Completion.FAILED
    failed = stored(gw, job)
    assert failed.error is not None
    assert failed.error.code == "runpod_bad_output"
