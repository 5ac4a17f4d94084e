"""Start the Pub/Sub, Firestore and GCS emulators on free loopback ports, and stop them.

Used by the test suite, ``make run`` and the benchmarks.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from infra.processes import ManagedProcess, ProcessError, free_port, spawn, stop_all

START_TIMEOUT_S = 90.0


class EmulatorError(ProcessError):
    pass


@dataclass
class Emulator:
    env_var: str
    host: str
    handle: ManagedProcess


def _require_gcloud() -> str:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorError(
            "gcloud is not on PATH: the Pub/Sub and Firestore emulators come with the Google "
            "Cloud CLI (components pubsub-emulator and cloud-firestore-emulator, plus Java)."
        )
    return gcloud


def _wait_ready(emulator: Emulator, deadline: float) -> None:
    handle = emulator.handle
    while time.monotonic() < deadline:
        if not handle.alive:
            raise EmulatorError(
                f"the {handle.name} emulator exited with {handle.process.returncode}:\n"
                f"{handle.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"http://{emulator.host}/", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers HTTP: it is up
        except OSError:
            time.sleep(0.2)
    raise EmulatorError(
        f"the {handle.name} emulator did not answer on {emulator.host} within "
        f"{START_TIMEOUT_S:.0f}s:\n{handle.log_tail()}"
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
                handle = spawn(name, argv, log_dir=log_dir)
                self.running.append(Emulator(env_var, f"127.0.0.1:{ports[name]}", handle))
            deadline = time.monotonic() + START_TIMEOUT_S
            for emulator in self.running:
                _wait_ready(emulator, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_all(e.handle for e in reversed(self.running))
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
