"""Where the operator tools (``python -m functions.keys``, ``python -m functions.intake_replay``)
find their deployment: the local stack's environment file while ``make run`` is up, else the
process environment and credentials (a real project).

``make run`` writes ``.devstack/env`` in the repository root (git-ignored, owner-only) with what
its processes were started with: the emulator hosts, the project, the bucket, the collection
prefix, the reply topics and its throwaway intake signing key. A tool run in that directory (or
below it) reads the file into its environment before it builds its one ``Settings``, so it talks
to the same emulators without anyone exporting variables. ``--env-file`` names another file;
``--no-env-file`` ignores it (the environment as it is). A file whose emulators no longer
answer (the stack has stopped) is an error, never a silent switch to the real project.
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Mapping
from pathlib import Path

ENV_FILE = Path(".devstack") / "env"
"""Relative to the repository root (or wherever ``make run`` ran)."""
CHECKED_HOST = "FIRESTORE_EMULATOR_HOST"


class EnvFileError(Exception):
    """The env file exists but cannot be used."""


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """``NAME=value`` lines, shell-quoted (``set -a; . .devstack/env`` works too); readable by
    its owner only, since it holds the local stack's intake signing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `make run` (infra/devstack.py) for the operator tools; deleted at exit."]
    lines += [f"{name}={shlex.quote(value)}" for name, value in sorted(values.items())]
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")
    temporary.replace(path)


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, rest = line.partition("=")
        words = shlex.split(rest) if sep else []
        if not sep or not name.strip().isidentifier() or len(words) > 1:
            raise EnvFileError(f"{path}:{number}: not a NAME=value line")
        values[name.strip()] = words[0] if words else ""
    return values


def find_env_file(start: Path) -> Path | None:
    """``.devstack/env`` in ``start`` or the nearest directory above it that has one."""
    for directory in (start, *start.parents):
        candidate = directory / ENV_FILE
        if candidate.is_file():
            return candidate
    return None


def load(*, env_file: Path | None, ignore: bool, start: Path | None = None) -> Path | None:
    """Put the env file's values into this process's environment (the tools' only env write,
    made before their Settings and clients exist); return the file used, or None."""
    if ignore:
        return None
    path = env_file or find_env_file(start or Path.cwd())
    if path is None:
        return None
    if not path.is_file():
        raise EnvFileError(f"{path} does not exist")
    values = read_env_file(path)
    host = values.get(CHECKED_HOST)
    if host and not _answers(host):
        raise EnvFileError(
            f"{path} names emulators that no longer answer ({CHECKED_HOST}={host}): start "
            "`make run` again, delete the file, or pass --no-env-file"
        )
    os.environ.update(values)
    return path


def _answers(host: str) -> bool:
    name, _, port = host.rpartition(":")
    try:
        with socket.create_connection((name or "127.0.0.1", int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False
