"""Stage and deploy the Cloud Functions declared in ``topology.yaml``.

Cloud Functions wants ``main.py`` at the root of its source; each function gets a staged
directory with a one-line ``main.py`` that re-exports its entry point, plus ``functions/``,
``shared/`` and the functions' ``requirements.txt`` (no torch, no qwen-tts) with the function's
own extras (the voice registry adds torch to load prompt files safely).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from infra.topology import Function, Topology

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("functions", "shared")


def stage(target: Path, *, function: Function) -> Path:
    """One source directory per function: its own ``main.py`` and its own requirements."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, target / package, ignore=ignore)
    requirements = (REPO_ROOT / "requirements.txt").read_text()
    if function.extra_requirements:
        requirements += "\n# This function only:\n" + "\n".join(function.extra_requirements) + "\n"
    (target / "requirements.txt").write_text(requirements)
    (target / "main.py").write_text(
        f'"""Cloud Functions source root for {function.name}."""\n\n'
        f"from {function.module} import {function.entry_point}\n\n"
        f"__all__ = [{function.entry_point!r}]\n"
    )
    return target


def stage_all(root: Path, topology: Topology) -> dict[str, Path]:
    return {f.name: stage(root / f.name, function=f) for f in topology.functions}


def deploy_commands(
    topology: Topology,
    *,
    sources: Mapping[str, Path],
    project_id: str,
    bucket: str,
    region: str,
    env: Mapping[str, str],
) -> list[list[str]]:
    env_vars = ",".join(f"{k}={v}" for k, v in sorted(env.items()))
    commands = []
    for function in topology.functions:
        command = [
            "gcloud", "functions", "deploy", function.name,
            "--gen2", "--runtime=python311",
            f"--project={project_id}", f"--region={region}",
            f"--source={sources[function.name]}", f"--entry-point={function.entry_point}",
            f"--memory={function.memory}", f"--timeout={function.timeout_s}s",
            f"--set-env-vars={env_vars}",
        ]  # fmt: skip
        if function.secrets:
            mounted = ",".join(f"{env}={secret}:latest" for env, secret in function.secrets.items())
            command.append(f"--set-secrets={mounted}")
        kind, _, target = function.trigger.partition(":")
        if kind == "http":
            # Public ones authenticate callers themselves (API keys, webhook tokens); the rest
            # (the push-fed dispatcher) accept only IAM-authenticated calls.
            command += ["--trigger-http"]
            command.append(
                "--allow-unauthenticated" if function.public else "--no-allow-unauthenticated"
            )
        elif kind == "topic":
            command += [f"--trigger-topic={target}"]
        elif kind == "storage":
            command += [
                f"--trigger-event-filters=type=google.cloud.storage.object.v1.{target}",
                f"--trigger-event-filters=bucket={bucket}",
            ]
        else:
            raise ValueError(f"{function.name}: unknown trigger {function.trigger!r}")
        if function.retry:
            command.append("--retry")
        commands.append(command)
    return commands


def wiring_commands(
    topology: Topology,
    *,
    project_id: str,
    region: str,
    push_service_account: str,
) -> list[list[str]]:
    """After the functions exist: point push subscriptions at them; create the schedules."""
    commands = []
    for sub in topology.subscriptions:
        if sub.push_function:
            url = f"https://{region}-{project_id}.cloudfunctions.net/{sub.push_function}"
            commands.append([
                "gcloud", "pubsub", "subscriptions", "modify-push-config", sub.name,
                f"--project={project_id}", f"--push-endpoint={url}",
                f"--push-auth-service-account={push_service_account}",
            ])  # fmt: skip
    for schedule in topology.schedules:
        commands.append([
            "gcloud", "scheduler", "jobs", "create", "pubsub", schedule.name,
            f"--project={project_id}", f"--location={region}",
            f"--schedule={schedule.cron}", f"--topic={schedule.topic}", "--message-body=tick",
        ])  # fmt: skip
    return commands


def run(commands: Sequence[Sequence[str]]) -> None:
    for command in commands:
        subprocess.run(command, check=True)
