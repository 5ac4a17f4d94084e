from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.domain.backends import (
    API_VERSION,
    BackendConfig,
    BackendKind,
)
from shared.domain.errors import NoBackendAvailable
from shared.domain.verification import SIGNAL_CHECKS, Check
from shared.settings import ApiSettings, Settings
from shared.usecases.routing import choose_backend
from tests.support.backends import heartbeat

HOME = BackendConfig(
    id="home-4090", kind=BackendKind.HOME_GPU, priority=10, modes=("custom_voice",)
)
RUNPOD = BackendConfig(
    id="runpod", kind=BackendKind.RUNPOD, priority=20, modes=("custom_voice", "voice_design")
)


def test_lowest_priority_number_with_the_mode_wins() -> None:
    assert choose_backend([RUNPOD, HOME], mode="custom_voice") == HOME
    assert choose_backend([RUNPOD, HOME], mode="voice_design") == RUNPOD


def test_a_heartbeat_narrows_what_a_backend_is_trusted_with() -> None:
    everything = BackendConfig(id="home-4090", kind=BackendKind.HOME_GPU, priority=10)
    beat = heartbeat(modes=("custom_voice",))
    assert choose_backend([everything], mode="voice_design") == everything  # never reported
    with pytest.raises(NoBackendAvailable):
        choose_backend([everything], mode="voice_design", seen={"home-4090": beat})
    assert choose_backend([everything, RUNPOD], mode="voice_design", seen={"home-4090": beat}) == (
        RUNPOD
    )


def test_a_backend_on_another_api_version_is_never_chosen() -> None:
    """A worker on another API version speaks another contract: never routed to."""
    beat = heartbeat(modes=("custom_voice",), api_version=API_VERSION + 1)
    with pytest.raises(NoBackendAvailable):
        choose_backend([HOME], mode="custom_voice", seen={"home-4090": beat})


def test_a_job_that_asks_for_checks_goes_first_to_a_backend_that_runs_them_all() -> None:
    home = heartbeat(backend_id="home-4090", modes=("custom_voice",), checks=SIGNAL_CHECKS)
    runpod = heartbeat(backend_id="runpod", modes=("custom_voice",), checks=tuple(Check))
    seen = {"home-4090": home, "runpod": runpod}
    assert choose_backend([HOME, RUNPOD], mode="custom_voice", seen=seen) == HOME
    assert choose_backend([HOME, RUNPOD], mode="custom_voice", seen=seen, verify=True) == RUNPOD
    # Where none runs them all, the job still runs, by priority; its report names what ran.
    seen["runpod"] = heartbeat(backend_id="runpod", modes=("custom_voice",))
    assert choose_backend([HOME, RUNPOD], mode="custom_voice", seen=seen, verify=True) == HOME


def test_no_capable_backend_is_a_transient_refusal_with_the_reason() -> None:
    with pytest.raises(NoBackendAvailable, match="voice_clone") as info:
        choose_backend([HOME], mode="voice_clone")
    assert info.value.retryable


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_BUCKET", "b1")
    monkeypatch.setenv("TTS_WORKER__MODELS", '["/models/x", "/models/y"]')
    monkeypatch.setenv(
        "TTS_BACKENDS", '[{"id": "home-4090", "kind": "home_gpu"}, {"id": "rp", "kind": "runpod"}]'
    )
    settings = Settings()
    assert settings.bucket == "b1"
    assert settings.worker.models == ("/models/x", "/models/y")
    assert [b.id for b in settings.backends] == ["home-4090", "rp"]


def test_signed_urls_never_outlive_an_hour() -> None:
    with pytest.raises(ValidationError):
        ApiSettings(signed_url_ttl_s=3601)


def test_backend_ids_are_unique_and_well_formed() -> None:
    with pytest.raises(ValidationError, match="unique"):
        Settings(backends=(HOME, HOME))
    with pytest.raises(ValidationError):
        BackendConfig(id="Bad Id", kind=BackendKind.HOME_GPU)


def test_one_name_for_the_audio_duration_everywhere() -> None:
    """One name for a duration everywhere: ``duration_s``, never ``duration_seconds`` (but for
    the Google provider's own ``retention_duration_seconds``, which is not ours to name)."""
    root = Path(__file__).resolve().parents[2]
    folders = ("shared", "functions", "gpu_worker", "infra", "contracts")
    offenders = [
        str(path.relative_to(root))
        for folder in folders
        for path in (root / folder).rglob("*")
        if path.is_file()
        and re.search(r"(?<!retention_)duration_seconds", path.read_text(errors="ignore"))
    ]
    assert offenders == []


def test_runpod_cannot_hold_a_job_past_its_signed_urls() -> None:
    from shared.settings import RunPodSettings

    RunPodSettings(ttl_s=3000, execution_timeout_s=600)
    with pytest.raises(ValidationError, match="3600"):
        RunPodSettings(ttl_s=3600, execution_timeout_s=600)
