"""Start the Pub/Sub, Firestore and GCS emulators on free loopback ports, and stop them.

Used by the test suite and by ``make run``. Each emulator runs in its own process group so
stopping kills the Java child that ``gcloud`` spawns too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

START_TIMEOUT_S = 90.0


class EmulatorError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Emulator:
    name: str
    env_var: str
    host: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _require_gcloud() -> str:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorError(
            "gcloud is not on PATH: the Pub/Sub and Firestore emulators come with the Google "
            "Cloud CLI (components pubsub-emulator and cloud-firestore-emulator, plus Java)."
        )
    return gcloud


def _launch(name: str, env_var: str, argv: list[str], port: int, log_dir: Path) -> Emulator:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Emulator(name, env_var, f"127.0.0.1:{port}", process, log_path)


def _wait_ready(emulator: Emulator, deadline: float) -> None:
    url = f"http://{emulator.host}/"
    while time.monotonic() < deadline:
        if emulator.process.poll() is not None:
            raise EmulatorError(
                f"the {emulator.name} emulator exited with {emulator.process.returncode}:\n"
                f"{emulator.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers HTTP: it is up
        except OSError:
            time.sleep(0.2)
    raise EmulatorError(
        f"the {emulator.name} emulator did not answer on {emulator.host} within "
        f"{START_TIMEOUT_S:.0f}s:\n{emulator.log_tail()}"
    )


@dataclass
class Emulators:
    """A context manager owning the three emulators. ``env`` points clients at them."""

    project_id: str = "local-project"
    log_dir: Path | None = None
    running: list[Emulator] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {e.env_var: e.host for e in self.running}
        if "STORAGE_EMULATOR_HOST" in env:
            env["STORAGE_EMULATOR_HOST"] = f"http://{env['STORAGE_EMULATOR_HOST']}"
        env["GOOGLE_CLOUD_PROJECT"] = self.project_id
        return env

    def start(self) -> Emulators:
        gcloud = _require_gcloud()
        log_dir = self.log_dir or Path(tempfile.mkdtemp(prefix="tts-emulators-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in ("pubsub", "firestore", "gcs")}
        plans = [
            (
                "pubsub",
                "PUBSUB_EMULATOR_HOST",
                [gcloud, "beta", "emulators", "pubsub", "start",
                 f"--host-port=127.0.0.1:{ports['pubsub']}", f"--project={self.project_id}"],
            ),
            (
                "firestore",
                "FIRESTORE_EMULATOR_HOST",
                [gcloud, "emulators", "firestore", "start",
                 f"--host-port=127.0.0.1:{ports['firestore']}"],
            ),
            (
                "gcs",
                "STORAGE_EMULATOR_HOST",
                [sys.executable, "-m", "gcp_storage_emulator", "start",
                 "--host=127.0.0.1", f"--port={ports['gcs']}", "--in-memory"],
            ),
        ]  # fmt: skip
        try:
            for name, env_var, argv in plans:
                self.running.append(_launch(name, env_var, argv, ports[name], log_dir))
            deadline = time.monotonic() + START_TIMEOUT_S
            for emulator in self.running:
                _wait_ready(emulator, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for emulator in reversed(self.running):
            emulator.stop()
        self.running.clear()

    def __enter__(self) -> Emulators:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
