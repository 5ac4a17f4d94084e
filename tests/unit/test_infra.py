"""The topology file and the functions' staging, checked without a cloud."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra import staging, topology
from shared.domain.backends import BackendKind
from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


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
    staged = staging.stage(tmp_path / "api", function=api)
    assert not staged_packages(staged) & {"torch", "torchaudio", "qwen-tts", "numpy", "soundfile"}
    code = (
        "import sys, main\n"
        f"assert callable(main.{api.entry_point})\n"
        "assert not {'torch', 'numpy', 'qwen_tts'} & set(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=staged, check=True, env={"PATH": ""})


CPU_INDEX = "https://wheels.example/whl/cpu"


def test_the_voice_registry_gets_cpu_torch_but_never_qwen_tts(tmp_path: Path) -> None:
    declared = topology.load()
    registry = [f for f in declared.functions if f.trigger.startswith("storage:")]
    assert {f.trigger for f in registry} == {"storage:finalized", "storage:deleted"}
    for function in registry:
        staged = staging.stage(
            tmp_path / function.name, function=function, extra_index_url=CPU_INDEX
        )
        packages = staged_packages(staged)
        assert "torch" in packages
        assert not packages & {"qwen-tts", "transformers", "runpod", "torchaudio"}
        text = (staged / "requirements.txt").read_text()
        # The CPU build (a local version only PyTorch's CPU index serves), found through the
        # extra index the Cloud Functions build's pip reads from the file itself.
        assert "torch==2.11.0+cpu" in text.splitlines()
        assert f"--extra-index-url {CPU_INDEX}" in text.splitlines()
        assert (
            f"from functions.events import {function.entry_point}"
            in (staged / "main.py").read_text()
        )


def test_staging_refuses_a_cpu_pin_without_its_index_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(staging.StagingError, match="extra-index-url"):
        staging.stage_all(tmp_path / "out", topology.load())
    assert not (tmp_path / "out").exists()


def test_only_the_voice_registry_needs_the_extra_index(tmp_path: Path) -> None:
    declared = topology.load()
    staged = staging.stage_all(tmp_path, declared, extra_index_url=CPU_INDEX)
    assert set(staged) == {f.name for f in declared.functions}
    for function in declared.functions:
        text = (staged[function.name] / "requirements.txt").read_text()
        assert ("--extra-index-url" in text) == function.trigger.startswith("storage:")


def test_staging_is_reproducible(tmp_path: Path) -> None:
    """Terraform zips the staged folders by content: the same checkout, the same bytes."""
    declared = topology.load()
    first = staging.stage_all(tmp_path / "a", declared, extra_index_url=CPU_INDEX)
    second = staging.stage_all(tmp_path / "b", declared, extra_index_url=CPU_INDEX)
    for name, path in first.items():
        files = sorted(p.relative_to(path) for p in path.rglob("*") if p.is_file())
        assert files == sorted(
            p.relative_to(second[name]) for p in second[name].rglob("*") if p.is_file()
        )
        assert all((path / f).read_bytes() == (second[name] / f).read_bytes() for f in files)


MIB = 1024 * 1024
PROCESS_BASELINE_MIB = 256
"""The API process before any request: Python, flask, the Google clients."""
BODY_COPIES = 3
"""A request body is in memory about three times at once: the raw body, its parsed JSON, and
the decoded clip (a base64 reference clip decodes to three quarters of its text)."""


def _mebibytes(size: str) -> int:
    number, unit = size[:-2], size[-2:]
    return int(number) * {"Mi": 1, "Gi": 1024}[unit]


def test_the_api_holds_its_concurrent_requests_at_the_largest_body_in_memory() -> None:
    """Memory and concurrency agree: every concurrent request may carry the largest body the
    settings allow (TTS_API__MAX_BODY_BYTES can be raised to its bound at deploy)."""
    from shared.settings import ApiSettings

    api = next(f for f in topology.load().functions if f.entry_point == "api")
    largest = next(
        m.le for m in ApiSettings.model_fields["max_body_bytes"].metadata if hasattr(m, "le")
    )
    assert largest == 32 * MIB
    needed = PROCESS_BASELINE_MIB + api.concurrency * BODY_COPIES * largest // MIB
    assert needed <= _mebibytes(api.memory), (api.memory, api.concurrency, needed)
    # Cloud Run: above 1 GiB takes at least one vCPU, above 4 GiB two.
    assert api.cpu is not None
    assert float(api.cpu) >= (2 if _mebibytes(api.memory) > 4096 else 1)


def test_the_terraform_image_is_pinned_to_one_release() -> None:
    import re

    import yaml

    build = yaml.safe_load((REPO_ROOT / "cloudbuild.yaml").read_text())
    images = [step["name"] for step in build["steps"] if "terraform" in step["name"]]
    assert images
    assert all(re.fullmatch(r"hashicorp/terraform:\d+\.\d+\.\d+", i) for i in images)


def test_the_readme_deploys_from_an_empty_project_in_order() -> None:
    """Application default credentials before the first terraform call; every numbered step
    says whose rights it runs with; the deployer has no editor role."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Deploying", 1)[1].split("\n## ", 1)[0]
    adc = section.index("gcloud auth application-default login")
    assert adc < section.index("\n   terraform init")  # the first terraform command run
    assert section.index("infra/deployer.sh $PROJECT") < adc
    steps = [chunk for chunk in section.split("\n") if chunk[:3].strip().rstrip(".").isdigit()]
    assert len(steps) >= 9
    bodies = section.split("\n1. Tools", 1)[1]
    for number in range(2, len(steps) + 1):
        body = bodies.split(f"\n{number}. ", 1)[1].split(f"\n{number + 1}. ", 1)[0]
        assert any(word in body for word in ("**Role:**", "**Runs as:**", "Role:", "see [")), (
            f"step {number} does not say whose rights it needs"
        )
    assert "for step 2 only" not in " ".join(readme.split())


def test_synchronous_routes_fit_in_the_api_functions_timeout() -> None:
    """A synchronous call or a stream waits up to max_wait_s inside one request."""
    api = next(f for f in topology.load().functions if f.entry_point == "api")
    assert api.timeout_s > Settings().api.max_wait_s + 30
    assert api.concurrency > 1
    # Cloud Run: concurrency above 1 needs a whole vCPU.
    assert api.cpu is not None
    assert float(api.cpu) >= 1


def test_every_function_that_can_send_a_webhook_mounts_the_signing_key() -> None:
    """Creating a job with a webhook (API, intake) and finishing one (dispatch, webhook,
    monitor) both need the key; the voice registry never touches jobs."""
    for function in topology.load().functions:
        if function.trigger.startswith("storage:"):
            assert "TTS_WEBHOOKS__SIGNING_KEY" not in function.secrets
        else:
            assert function.secrets.get("TTS_WEBHOOKS__SIGNING_KEY") == "webhook-signing-key"


def test_runpod_jobs_reach_the_dispatcher_through_a_filtered_push_subscription() -> None:
    declared = topology.load()
    sub = declared.subscription("tts-jobs-runpod")
    assert sub.filter == 'attributes.backend = "runpod"'
    assert sub.dead_letter is not None
    assert sub.push_function == "tts-runpod-dispatch"
    dispatcher = next(f for f in declared.functions if f.name == sub.push_function)
    assert not dispatcher.public  # only Pub/Sub's signed pushes may call it
    secrets = {f.name: f.secrets for f in declared.functions}
    assert "TTS_RUNPOD__WEBHOOK_SECRET" in secrets["tts-runpod-webhook"]
    assert any(s.topic == "tts-monitor-tick" for s in declared.schedules)


def test_the_functions_publish_where_the_settings_say() -> None:
    """IAM follows the topology's publishers; the settings name the topics the code uses."""
    declared = topology.load()
    settings = Settings()
    by_functions = {t.name for t in declared.topics if "functions" in t.publishers}
    assert {settings.jobs_topic, settings.results_topic, settings.intake_dead_letter_topic} <= (
        by_functions
    )
    by_worker = {t.name for t in declared.topics if "home-worker" in t.publishers}
    assert settings.results_topic in by_worker
    # Finishing the last item of a joined batch, the worker makes and publishes the join job.
    assert settings.jobs_topic in by_worker
    pulled = {s.name for s in declared.subscriptions if "home-worker" in s.subscribers}
    assert pulled == {settings.worker.subscription}


def test_the_audio_lifecycle_rule_and_the_retention_setting_agree() -> None:
    """The cache serves audio younger than ``retention.audio_days``: the bucket must keep it."""
    from infra import topology
    from shared.settings import Settings

    rules = {r.prefix: r.age_days for r in topology.load().bucket.expire}
    assert rules["audio/"] == Settings().retention.audio_days


def test_a_schedule_s_interval_is_its_fixed_step_of_minutes_and_nothing_else() -> None:
    def every_s(cron: str) -> int:
        return topology.Schedule(name="s", topic="t", cron=cron).every_s

    assert every_s("* * * * *") == 60
    assert every_s("*/5 * * * *") == 300
    # At minute 5 of each hour, weekdays at nine, a step that skips at the hour: no one interval.
    for cron in ("5 * * * *", "0 9 * * 1-5", "*/7 * * * *", "*/0 * * * *", "* * * *"):
        with pytest.raises(ValueError, match="fixed step"):
            every_s(cron)


def test_the_local_stack_runs_the_monitor_on_the_cloud_s_schedule(tmp_path: Path) -> None:
    from infra.devstack import DevStack

    declared = topology.load()
    monitor = next(f for f in declared.functions if f.module == "functions.monitor")
    schedule = declared.schedule_of(monitor)  # the tick Cloud Scheduler publishes to its topic
    assert monitor.trigger == f"topic:{schedule.topic}"
    stack = DevStack(models=(), run_dir=tmp_path)
    assert stack.monitor_every_s == schedule.every_s
    with pytest.raises(ValueError, match="monitor"):
        DevStack(models=(), run_dir=tmp_path, runpod=True, monitor_every_s=None)
