"""Fixtures shared by every layer: a gateway built from fakes through the real bootstrap."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from flask.testing import FlaskClient

from functions.api.app import create_api
from shared.domain.modes import ModelType
from shared.settings import Settings
from shared.usecases.gateway import Gateway
from tests.support.gateway import Fakes, fake_gateway, issue_key, make_fakes

if TYPE_CHECKING:
    from gpu_worker.tiny_asr import TinyListener

# One OpenMP thread for torch (and BLAS), in this process and in every process the tests start
# (the local stack, the RunPod handler: they inherit the environment). The tiny models'
# matrices are too small to split, and each process's spinning second thread fights the
# emulators and the other processes for two cores (a quarter of the CPU time, and far less
# waiting on a busy machine). A thread count set by the caller wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def fakes() -> Fakes:
    return make_fakes()


@pytest.fixture
def settings() -> Settings:
    return Settings(bucket="test-bucket")


@pytest.fixture
def gateway(settings: Settings, fakes: Fakes) -> Gateway:
    return fake_gateway(settings, fakes)


@pytest.fixture
def alice(gateway: Gateway) -> dict[str, str]:
    return issue_key(gateway, "alice")


@pytest.fixture
def client(gateway: Gateway) -> FlaskClient:
    return create_api(gateway).test_client()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random custom-voice Qwen3-TTS model, built offline: real code path, noise for audio."""
    from gpu_worker.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "custom_voice"))


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One tiny model of each type (custom_voice, voice_design, base), by type."""
    from gpu_worker.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-all")
    return {
        model_type: str(build_tiny_model(root / model_type, model_type=model_type))
        for model_type in ModelType
    }


@pytest.fixture(scope="session")
def tiny_listeners_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[TinyListener, Path]:
    """A random Qwen3-ASR and a random Qwen3-ForcedAligner, built offline: qwen-asr's real code
    path, random words and times."""
    from gpu_worker.tiny_asr import TinyListener, build_tiny_asr

    root = tmp_path_factory.mktemp("tiny-listeners")
    return {kind: build_tiny_asr(root / kind, kind=kind) for kind in TinyListener}
