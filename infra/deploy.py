"""Stage and deploy the Cloud Functions declared in ``topology.yaml``.

Cloud Functions wants ``main.py`` at the root of its source; the staged directory holds a
one-line ``main.py`` that re-exports the entry points, plus ``functions/``, ``shared/`` and the
functions' own ``requirements.txt`` (no torch, no qwen-tts).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from infra.topology import Function, Topology

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("functions", "shared")


def stage(target: Path, *, functions: Sequence[Function]) -> Path:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, target / package, ignore=ignore)
    shutil.copy2(REPO_ROOT / "requirements.txt", target / "requirements.txt")
    entry_points = sorted({f.entry_point for f in functions})
    (target / "main.py").write_text(
        '"""Cloud Functions source root: the entry points live in functions/main.py."""\n\n'
        f"from functions.main import {', '.join(entry_points)}\n\n"
        f"__all__ = {entry_points!r}\n"
    )
    return target


def deploy_commands(
    topology: Topology,
    *,
    source: Path,
    project_id: str,
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
            f"--source={source}", f"--entry-point={function.entry_point}",
            f"--memory={function.memory}", f"--timeout={function.timeout_s}s",
            f"--set-env-vars={env_vars}",
        ]  # fmt: skip
        if function.trigger == "http":
            # The API authenticates every route itself (hashed API keys); IAM would block callers.
            command += ["--trigger-http", "--allow-unauthenticated"]
        else:
            command += [f"--trigger-topic={function.trigger.removeprefix('topic:')}"]
        commands.append(command)
    return commands


def run(commands: Sequence[Sequence[str]]) -> None:
    for command in commands:
        subprocess.run(command, check=True)
