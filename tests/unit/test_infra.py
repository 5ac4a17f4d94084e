"""The topology file and the deploy staging, checked without a cloud."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from infra import deploy, topology
from shared.domain.backends import BackendKind
from shared.settings import Settings


def test_every_home_backend_has_a_subscription_filtered_on_its_id() -> None:
    declared = topology.load()
    topics = {t.name for t in declared.topics}
    for backend in Settings().backends:
        if backend.kind is BackendKind.HOME_GPU:
            sub = declared.subscription(f"tts-jobs-{backend.id}")
            assert sub.topic == Settings().jobs_topic
            assert sub.filter == f'attributes.backend = "{backend.id}"'
            assert sub.dead_letter is not None
            assert sub.dead_letter.topic in topics
    assert Settings().worker.subscription == f"tts-jobs-{Settings().worker.backend_id}"


def staged_packages(staged: Path) -> set[str]:
    lines = (staged / "requirements.txt").read_text().splitlines()
    return {line.split("==")[0].lower() for line in lines if line and not line.startswith("#")}


def test_the_api_stages_without_the_model_stack(tmp_path: Path) -> None:
    api = next(f for f in topology.load().functions if f.trigger == "http")
    staged = deploy.stage(tmp_path / "api", function=api)
    assert not staged_packages(staged) & {"torch", "torchaudio", "qwen-tts", "numpy", "soundfile"}
    code = (
        "import sys, main\n"
        f"assert callable(main.{api.entry_point})\n"
        "assert not {'torch', 'numpy', 'qwen_tts'} & set(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=staged, check=True, env={"PATH": ""})


def test_the_voice_registry_gets_torch_but_never_qwen_tts(tmp_path: Path) -> None:
    declared = topology.load()
    registry = [f for f in declared.functions if f.trigger.startswith("storage:")]
    assert {f.trigger for f in registry} == {"storage:finalized", "storage:deleted"}
    for function in registry:
        staged = deploy.stage(tmp_path / function.name, function=function)
        packages = staged_packages(staged)
        assert "torch" in packages
        assert not packages & {"qwen-tts", "transformers", "runpod"}
        assert (
            f"from functions.events import {function.entry_point}"
            in (staged / "main.py").read_text()
        )


def test_deploy_commands_name_each_function(tmp_path: Path) -> None:
    declared = topology.load()
    commands = deploy.deploy_commands(
        declared,
        sources={f.name: tmp_path / f.name for f in declared.functions},
        project_id="p",
        region="r",
        bucket="b",
        env={"TTS_BUCKET": "b"},
    )
    assert [c[3] for c in commands] == [f.name for f in declared.functions]
    api = commands[0]
    assert "--entry-point=api" in api
    assert "--trigger-http" in api
    assert "--set-env-vars=TTS_BUCKET=b" in api
    finalized = next(c for c in commands if c[3] == "tts-voice-registered")
    assert "--trigger-event-filters=type=google.cloud.storage.object.v1.finalized" in finalized
    assert "--trigger-event-filters=bucket=b" in finalized
    assert "--retry" in finalized


def test_runpod_jobs_reach_the_dispatcher_through_a_filtered_push_subscription() -> None:
    declared = topology.load()
    sub = declared.subscription("tts-jobs-runpod")
    assert sub.filter == 'attributes.backend = "runpod"'
    assert sub.dead_letter is not None
    assert sub.push_function == "tts-runpod-dispatch"
    dispatcher = next(f for f in declared.functions if f.name == sub.push_function)
    assert not dispatcher.public  # only Pub/Sub's signed pushes may call it
    commands = deploy.wiring_commands(
        declared, project_id="p", region="r", push_service_account="push@p.iam"
    )
    push = next(c for c in commands if "modify-push-config" in c)
    assert "--push-endpoint=https://r-p.cloudfunctions.net/tts-runpod-dispatch" in push
    assert any("scheduler" in c for c in commands)
    secrets = {f.name: f.secrets for f in declared.functions}
    assert "TTS_RUNPOD__WEBHOOK_SECRET" in secrets["tts-runpod-webhook"]


def test_the_audio_lifecycle_rule_and_the_retention_setting_agree() -> None:
    """The cache serves audio younger than ``retention.audio_days``: the bucket must keep it."""
    from infra import topology
    from shared.settings import Settings

    rules = {r.prefix: r.age_days for r in topology.load().bucket.expire}
    assert rules["audio/"] == Settings().retention.audio_days
