"""The monitor over fakes: stale backends, re-routing, lease expiry, lost publishes, spill-over."""

from __future__ import annotations

import logging
import threading
from datetime import datetime

import pytest

from shared.domain.backends import (
    API_VERSION,
    BackendConfig,
    BackendKind,
    BackendStatus,
)
from shared.domain.errors import InvalidRequest, TransientError
from shared.domain.jobs import Job, JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import MonitorSettings, Settings
from shared.usecases.batch import submit_batch
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from shared.usecases.monitor import MonitorReport, run_monitor
from shared.wire.bodies import BatchBody, JobOptions
from tests.support.backends import heartbeat
from tests.support.fakes import FakeRunPod
from tests.support.gateway import Fakes, fake_gateway

ALICE = Principal(
    owner="alice", scopes=frozenset({Scope.USER}), reply_topics=frozenset({"gone", "kept"})
)
HOME = BackendConfig(id="home-4090", kind=BackendKind.HOME_GPU, priority=10, max_queue=2)
RUNPOD = BackendConfig(id="runpod", kind=BackendKind.RUNPOD, priority=20)


@pytest.fixture
def gw(fakes: Fakes) -> Gateway:
    settings = Settings(
        bucket="test-bucket",
        backends=(HOME, RUNPOD),
        monitor=MonitorSettings(stale_after_s=30, requeue_after_s=120),
    )
    return fake_gateway(settings, fakes)


def beat(gw: Gateway, backend_id: str = "home-4090", *, at: datetime | None = None) -> None:
    gw.backends.heartbeat(heartbeat(backend_id=backend_id, at=at or gw.clock()))


def submitted(gw: Gateway) -> Job:
    return submit_job(gw, principal=ALICE, request=CustomVoiceRequest(text="Hi.", speaker="eric"))


def test_a_silent_backend_goes_offline_and_its_queue_moves_to_runpod(
    gw: Gateway, fakes: Fakes
) -> None:
    beat(gw)
    queued = [submitted(gw) for _ in range(2)]
    assert {j.backend for j in queued} == {"home-4090"}
    fakes.clock.advance(31)
    report = run_monitor(gw, runpod=FakeRunPod())
    assert report.offline == ["home-4090"]
    assert sorted(report.rerouted) == sorted(j.id for j in queued)
    for job in queued:
        moved = gw.jobs.get(job.id)
        assert moved is not None
        assert (moved.state, moved.backend) == (JobState.QUEUED, "runpod")
    targets = {m.attributes["backend"] for m in fakes.publisher.messages[-2:]}
    assert targets == {"runpod"}
    # New work goes straight to RunPod while the 4090 is down.
    assert submitted(gw).backend == "runpod"
    # It comes back: new work goes home again.
    beat(gw)
    assert submitted(gw).backend == "home-4090"


def test_an_expired_lease_returns_the_job_to_the_queue_once(gw: Gateway, fakes: Fakes) -> None:
    job = submitted(gw)
    gw.jobs.update(job.id, lambda j: j.claim("w1", backend="home-4090", now=gw.clock(), lease_s=60))
    assert run_monitor(gw).expired == []
    fakes.clock.advance(61)
    assert run_monitor(gw).expired == [job.id]
    assert run_monitor(gw).expired == []
    requeued = gw.jobs.get(job.id)
    assert requeued is not None
    assert (requeued.state, requeued.attempts) == (JobState.QUEUED, 1)
    assert fakes.publisher.messages[-1].data.decode().find(job.id) > 0


def test_a_job_whose_publish_was_lost_is_published_again(gw: Gateway, fakes: Fakes) -> None:
    fakes.publisher.failures = 3  # every attempt of the submit's publish fails
    job = submitted(gw)
    assert fakes.publisher.messages == []
    assert run_monitor(gw).republished == []  # not yet overdue
    fakes.clock.advance(121)
    assert run_monitor(gw).republished == [job.id]
    assert len(fakes.publisher.messages) == 1


def test_spill_over_when_the_home_queue_is_deep(gw: Gateway, fakes: Fakes) -> None:
    beat(gw)
    first = [submitted(gw) for _ in range(3)]
    assert {j.backend for j in first} == {"home-4090"}
    run_monitor(gw)  # counts the queue: 3 > max_queue 2
    assert submitted(gw).backend == "runpod"


def test_runpod_health_feeds_its_backend_document(gw: Gateway) -> None:
    run_monitor(gw, runpod=FakeRunPod())
    doc = gw.backends.get("runpod")
    assert doc is not None
    assert doc.status is BackendStatus.ONLINE
    assert doc.capabilities.api_version == API_VERSION


def test_the_debug_view_needs_the_admin_scope(gateway: Gateway, fakes: Fakes) -> None:
    """The debug view shows every backend and queue: admins only."""
    from functions.api.app import create_api
    from tests.support.api import checked
    from tests.support.gateway import issue_key

    client = create_api(gateway).test_client()
    user = checked("GET", "/v1/debug", client.get("/v1/debug", headers=issue_key(gateway, "u")))
    assert user.status_code == 403
    beat(gateway)
    fakes.clock.advance(gateway.settings.monitor.stale_after_s + 1)
    run_monitor(gateway)
    admin = issue_key(gateway, "root", admin=True)
    view = checked("GET", "/v1/debug", client.get("/v1/debug", headers=admin)).json
    assert view is not None
    assert view["backends"][0]["config"]["id"] == "home-4090"
    assert view["backends"][0]["last_seen"]["status"] == "offline"
    assert [e["event"] for e in view["events"]] == ["offline"]


def test_a_cast_whose_children_ended_unsettled_is_settled_by_the_monitor(
    gateway: Gateway, fakes: Fakes
) -> None:
    from shared.domain.jobs import JobError
    from shared.usecases.casting import cast_voices
    from shared.wire.bodies import CastBody, CastItem

    body = CastBody(
        character="Ann", base_description="A calm voice", text="Hello.",
        items=(CastItem(emotion="happy"), CastItem(emotion="sad")),
    )  # fmt: skip
    parent = cast_voices(gateway, principal=ALICE, body=body)
    children = parent.request.children  # type: ignore[union-attr]
    # Both children finish, but whoever finished the last died before settling the parent.
    now = gateway.clock()
    error = JobError(code="x", message="boom")
    for child_id, ok in zip(children, (True, False), strict=True):
        gateway.jobs.update(child_id, lambda j: j.claim("w", backend=j.backend, now=now, lease_s=9))
        if ok:
            gateway.jobs.update(child_id, lambda j: j.succeed("w", attempt=1, result=None, now=now))
        else:
            gateway.jobs.update(child_id, lambda j: j.fail("w", attempt=1, error=error, now=now))
    assert run_monitor(gateway).settled == [parent.id]
    settled = gateway.jobs.get(parent.id)
    assert settled is not None
    assert settled.state is JobState.FAILED
    assert run_monitor(gateway).settled == []


def test_a_failed_pass_is_logged_and_the_next_tick_runs_anyway(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from functions.monitor import tick

    stop = threading.Event()
    passes: list[int] = []

    def run_pass() -> MonitorReport:
        passes.append(len(passes))
        if len(passes) == 1:
            raise TransientError("firestore is away")
        if len(passes) == 3:
            stop.set()
        return MonitorReport(expired=["j1"])

    with caplog.at_level(logging.INFO, logger="functions.monitor"):
        tick(run_pass, every_s=0.001, stop=stop)
    assert passes == [0, 1, 2]
    failed = [r for r in caplog.records if r.getMessage() == "monitor pass failed"]
    assert len(failed) == 1
    assert failed[0].exc_info is not None
    assert [r.getMessage() for r in caplog.records].count("monitor pass") == 2


def test_the_monitor_loop_ends_while_it_waits_for_the_next_tick() -> None:
    from functions.monitor import tick

    stop = threading.Event()
    loop = threading.Thread(
        target=tick, args=(MonitorReport,), kwargs={"every_s": 3600, "stop": stop}
    )
    loop.start()
    stop.set()
    loop.join(timeout=5)
    assert not loop.is_alive()


# -- sweeps make progress ---------------------------------------------------------------------


def monitored(fakes: Fakes, **monitor: object) -> Gateway:
    settings = Settings(
        bucket="test-bucket",
        backends=(HOME, RUNPOD),
        reply_topics=("gone", "kept"),
        monitor=MonitorSettings.model_validate(monitor),
    )
    return fake_gateway(settings, fakes)


def ended(gw: Gateway, **options: object) -> Job:
    """A job that ended as its process died: announcing it is left to the monitor."""
    request = CustomVoiceRequest(text="Hi.", speaker="eric")
    job = submit_job(gw, principal=ALICE, request=request, options=JobOptions(**options))
    return gw.jobs.update(job.id, lambda j: j.cancel(now=gw.clock()))


def test_jobs_whose_reply_topic_is_gone_never_starve_a_later_announcement(fakes: Fakes) -> None:
    gw = monitored(fakes, batch=200, announce_grace_s=0)
    fakes.publisher.missing.add("gone")
    stuck = [ended(gw, reply_topic="gone") for _ in range(250)]
    fakes.clock.advance(1)
    last = ended(gw, reply_topic="kept")
    report = run_monitor(gw)
    assert last.id in report.announced
    kept = [m.attributes["job_id"] for m in fakes.publisher.messages if m.topic == "kept"]
    assert kept == [last.id]
    results = [m for m in fakes.publisher.messages if m.topic == "tts-results"]
    assert len(results) == 251
    assert {fakes.jobs.get(j.id).reply_failures for j in stuck} == {1}  # type: ignore[union-attr]


def test_runpod_cancels_once_done_are_not_selected_again(fakes: Fakes) -> None:
    gw = monitored(fakes, batch=2, pages=2)
    runpod = FakeRunPod()

    def canceled_on_runpod(runpod_id: str) -> Job:
        job = submitted(gw)
        gw.jobs.update(
            job.id, lambda j: j.model_copy(update={"backend": "runpod", "runpod_id": runpod_id})
        )
        return gw.jobs.update(job.id, lambda j: j.cancel(now=gw.clock()))

    done = [canceled_on_runpod(f"rp-{i}") for i in range(5)]  # more than one pass reads
    first = run_monitor(gw, runpod=runpod).runpod_canceled
    second = run_monitor(gw, runpod=runpod).runpod_canceled
    assert sorted(first + second) == sorted(j.id for j in done)
    fakes.clock.advance(1)
    late = canceled_on_runpod("rp-late")
    assert run_monitor(gw, runpod=runpod).runpod_canceled == [late.id]
    assert sorted(runpod.canceled) == sorted([f"rp-{i}" for i in range(5)] + ["rp-late"])


def test_queued_parents_never_starve_the_republishing_of_stuck_jobs(fakes: Fakes) -> None:
    gw = monitored(fakes, batch=2, pages=1, requeue_after_s=120)
    body = BatchBody.model_validate({"items": [{"text": "Hi.", "speaker": "eric"}]})
    for _ in range(3):
        parent = submit_batch(gw, principal=ALICE, body=body)
        [child] = parent.request.children  # type: ignore[union-attr]
        gw.jobs.update(
            child, lambda j: j.claim("w1", backend=j.backend, now=gw.clock(), lease_s=3600)
        )
    fakes.clock.advance(1)
    fakes.publisher.failures = gw.settings.api.publish_attempts  # its publish is lost
    stuck = submitted(gw)
    fakes.clock.advance(121)
    assert run_monitor(gw).republished == [stuck.id]


def test_one_job_that_fails_is_logged_and_the_pass_goes_on(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    gw = monitored(fakes, announce_grace_s=0)
    bad = ended(gw)
    fakes.clock.advance(1)
    good = ended(gw)
    publish = fakes.publisher.publish

    def refusing(topic: str, data: bytes, *, attributes: dict[str, str]) -> str:
        if attributes.get("job_id") == bad.id:
            raise InvalidRequest("the message is too large (fake)")
        return publish(topic, data, attributes=attributes)

    monkeypatch.setattr(fakes.publisher, "publish", refusing)
    assert run_monitor(gw).announced == [good.id]
    skipped = [r for r in caplog.records if r.getMessage() == "sweep skipped a job"]
    assert [r.job_id for r in skipped] == [bad.id]  # type: ignore[attr-defined]
