"""The structured lines the log-based metrics read (infra/terraform/monitoring.tf), written
where the events happen: one "job ended" per job however it ends, one "backend state" per
backend and monitor pass."""

from __future__ import annotations

import logging

import pytest

from shared.domain.backends import BackendConfig, BackendKind
from shared.domain.errors import SynthesisFailed
from shared.domain.jobs import JobError
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import MonitorSettings, Settings
from shared.usecases import completion
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from shared.usecases.monitor import run_monitor
from tests.support.backends import heartbeat
from tests.support.gateway import Fakes, fake_gateway

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))
HOME = BackendConfig(id="home-4090", kind=BackendKind.HOME_GPU, priority=10)
SPARE = BackendConfig(id="spare", kind=BackendKind.HOME_GPU, priority=20)


@pytest.fixture
def gw(fakes: Fakes) -> Gateway:
    settings = Settings(
        bucket="test-bucket", backends=(HOME, SPARE), monitor=MonitorSettings(stale_after_s=30)
    )
    return fake_gateway(settings, fakes)


def _lines(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == message]


def test_a_failed_job_ends_with_one_line_naming_its_mode_backend_outcome_and_code(
    gw: Gateway, fakes: Fakes, caplog: pytest.LogCaptureFixture
) -> None:
    gw.backends.heartbeat(heartbeat(backend_id="home-4090", at=gw.clock()))
    job = submit_job(gw, principal=ALICE, request=CustomVoiceRequest(text="Hi.", speaker="eric"))
    claimed = gw.jobs.update(
        job.id, lambda j: j.claim("w1", backend="home-4090", now=gw.clock(), lease_s=60)
    )
    fakes.clock.advance(4)
    caplog.set_level(logging.INFO)
    error = JobError(code=SynthesisFailed.code, message="no")
    assert completion.fail(gw, claimed, worker="w1", error=error)
    (line,) = _lines(caplog, "job ended")
    assert (line.mode, line.backend, line.outcome, line.code) == (  # type: ignore[attr-defined]
        "custom_voice",
        "home-4090",
        "failed",
        SynthesisFailed.code,
    )
    assert line.run_s == 4.0  # type: ignore[attr-defined]
    assert not hasattr(line, "rtf")  # no audio, no real-time factor


def test_each_monitor_pass_says_whether_each_backend_is_up(
    gw: Gateway, fakes: Fakes, caplog: pytest.LogCaptureFixture
) -> None:
    gw.backends.heartbeat(heartbeat(backend_id="home-4090", at=gw.clock()))
    caplog.set_level(logging.INFO)
    run_monitor(gw)
    states = {r.backend: r.up for r in _lines(caplog, "backend state")}  # type: ignore[attr-defined]
    # The spare never reported: down, as far as anyone can tell.
    assert states == {"home-4090": True, "spare": False}

    caplog.clear()
    fakes.clock.advance(60)  # the 4090's heartbeat goes stale
    run_monitor(gw)
    states = {r.backend: r.up for r in _lines(caplog, "backend state")}  # type: ignore[attr-defined]
    assert states == {"home-4090": False, "spare": False}
