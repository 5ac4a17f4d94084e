"""The topology file and the deploy staging, checked without a cloud."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from infra import deploy, topology
from shared.backends import BackendKind
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


def test_staged_source_imports_every_entry_point_without_the_model_stack(tmp_path: Path) -> None:
    declared = topology.load()
    staged = deploy.stage(tmp_path / "src", functions=declared.functions)
    lines = (staged / "requirements.txt").read_text().splitlines()
    packages = {line.split("==")[0].lower() for line in lines if line and not line.startswith("#")}
    assert not packages & {"torch", "torchaudio", "qwen-tts", "numpy", "soundfile", "runpod"}
    names = [f.entry_point for f in declared.functions]
    code = (
        "import sys, main\n"
        f"assert all(callable(getattr(main, n)) for n in {names!r})\n"
        "assert not {'torch', 'numpy', 'qwen_tts'} & set(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=staged, check=True, env={"PATH": ""})


def test_deploy_commands_name_each_function(tmp_path: Path) -> None:
    declared = topology.load()
    commands = deploy.deploy_commands(
        declared, source=tmp_path, project_id="p", region="r", env={"TTS_BUCKET": "b"}
    )
    assert [c[3] for c in commands] == [f.name for f in declared.functions]
    api = commands[0]
    assert "--entry-point=api" in api
    assert "--trigger-http" in api
    assert "--set-env-vars=TTS_BUCKET=b" in api
