"""Child processes the local tooling owns: each in its own process group, logged to a file,
and stopped with its children (``gcloud`` starts a Java child that must not outlive it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path


class ProcessError(RuntimeError):
    """A child process failed to start or died."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ManagedProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def last_error(self) -> str | None:
        """The message of the last ERROR line logged as JSON (how the gateway's processes log)."""
        for line in reversed(self.log_tail(200).splitlines()):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("severity") == "ERROR":
                return str(entry.get("message"))
        return None

    def check_alive(self) -> None:
        if self.alive:
            return
        reason = self.last_error() or self.log_tail(30)
        raise ProcessError(f"{self.name} exited with {self.process.returncode}: {reason}")

    def wait_until(self, ready: Callable[[], bool], *, timeout_s: float) -> None:
        """Poll ``ready`` until it holds; fail early, with the log, if the process dies."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if ready():
                return
            time.sleep(0.1)
        raise ProcessError(
            f"{self.name} did not become ready within {timeout_s:.0f}s:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 10) -> None:
        stop_all([self], timeout_s=timeout_s)


def stop_all(processes: Iterable[ManagedProcess], timeout_s: float = 10) -> None:
    """Stop them together: SIGTERM to each one's group, then wait for each, killing a group
    that outlives ``timeout_s``. Their shutdowns overlap, so this takes the longest of them."""
    running = [p for p in processes if p.alive]
    for handle in running:
        with suppress(ProcessLookupError):
            os.killpg(handle.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for handle in running:
        try:
            handle.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(handle.process.pid, signal.SIGKILL)
            handle.process.wait(timeout=timeout_s)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return ManagedProcess(name, process, log_path)
