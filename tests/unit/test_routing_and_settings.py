from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.backends import BackendConfig, BackendKind
from shared.errors import NoBackendAvailable
from shared.routing import choose_backend
from shared.settings import ApiSettings, Settings

HOME = BackendConfig(id="home-4090", kind=BackendKind.HOME_GPU, priority=10)
RUNPOD = BackendConfig(
    id="runpod", kind=BackendKind.RUNPOD, priority=20, modes=("custom_voice", "voice_design")
)


def test_lowest_priority_number_with_the_mode_wins() -> None:
    assert choose_backend([RUNPOD, HOME], mode="custom_voice") == HOME
    assert choose_backend([RUNPOD, HOME], mode="voice_design") == RUNPOD


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
    """Review 2.5 / 5.8: v1 said duration_s in one path and duration_seconds in another."""
    root = Path(__file__).resolve().parents[2]
    folders = ("shared", "functions", "gpu_worker", "infra", "contracts")
    offenders = [
        str(path.relative_to(root))
        for folder in folders
        for path in (root / folder).rglob("*")
        if path.is_file() and "duration_seconds" in path.read_text(errors="ignore")
    ]
    assert offenders == []
