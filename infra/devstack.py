"""The whole gateway on one machine: emulators, topology, the API function, the 4090 worker,
and the monitor on the cloud's schedule.

``make run`` runs this module; the end-to-end tests use ``DevStack`` directly. Everything it
starts runs in its own process group and is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType

from functions.tool_env import ENV_FILE, write_env_file
from infra import topology
from infra.emulators import Emulators
from infra.processes import ManagedProcess, ProcessError, free_port, spawn, stop_all
from infra.runpod_local import LocalRunPod
from shared.domain.keys import hash_key, key_id_for
from shared.domain.modes import ModelType
from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL_DIR = REPO_ROOT / ".cache" / "tiny-model"
READY_TIMEOUT_S = 120.0
MONITOR_MODULE = "functions.monitor"
TOOL_SETTINGS = (
    "TTS_PROJECT_ID",
    "TTS_BUCKET",
    "TTS_VOICES__BUCKET",
    "TTS_KEYS_DATABASE",
    "TTS_COLLECTION_PREFIX",
    "TTS_REPLY_TOPICS",
    "TTS_INTAKE__SIGNING_KEY",
)


def monitor_tick_s() -> float:
    """Seconds between the cloud's monitor passes: the schedule whose tick triggers the
    function the monitor module serves, as ``topology.yaml`` declares it."""
    declared = topology.load()
    function = next(f for f in declared.functions if f.module == MONITOR_MODULE)
    return declared.schedule_of(function).every_s


@dataclass
class DevStack:
    models: tuple[str, ...]
    """Worker model sources: Hugging Face ids or local directories, one per model type."""
    api_port: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    run_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tts-dev-")))
    emulators: Emulators = field(init=False)
    processes: list[ManagedProcess] = field(default_factory=list)
    runpod: bool = False
    """Also RunPod: the one handler behind a local RunPod API, the dispatcher and the webhook,
    with RunPod configured as the second backend."""
    webhook_signing_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    """Webhooks are on, as in the cloud, with a signing key of this stack's own."""
    monitor_every_s: float | None = field(default_factory=monitor_tick_s)
    """Seconds between monitor passes: the cloud's schedule unless told. ``None`` runs no
    monitor, for a test that runs the passes itself to see what one of them did."""
    api_key: str = ""
    intake_key_id: str = ""
    """The dev key's id, which signed intake messages name."""
    base_url: str = ""
    env_file: Path | None = None
    """Where to write the stack's environment for the operator tools (``functions.tool_env``):
    ``make run`` writes ``.devstack/env``; tests, which run stacks side by side, write none."""
    intake_signing_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    local_runpod: LocalRunPod | None = None
    _runpod_env: dict[str, str] = field(default_factory=dict)

    @property
    def bucket(self) -> str:
        return self.env.get("TTS_BUCKET") or str(Settings.model_fields["bucket"].default)

    @property
    def voices_bucket(self) -> str:
        """The voice files' own bucket, as in the cloud (``topology.yaml``'s voices_bucket)."""
        return self.env["TTS_VOICES__BUCKET"]

    def __post_init__(self) -> None:
        self.emulators = Emulators(log_dir=self.run_dir)
        if self.runpod and self.monitor_every_s is None:
            raise ValueError("RunPod's health reaches the gateway only through the monitor")

    @property
    def env(self) -> dict[str, str]:
        # Webhooks on, with the local stack's allowances (and only here): receivers on loopback
        # over plain http, so the README's webhook example runs against this stack.
        env = {
            "TTS_WEBHOOKS__SIGNING_KEY": self.webhook_signing_key,
            "TTS_WEBHOOKS__ALLOW_PRIVATE": "true",
            "TTS_WEBHOOKS__ALLOW_HTTP": "true",
            **os.environ,
        }
        env.update(self.emulators.env)
        env["PYTHONPATH"] = str(REPO_ROOT)
        env["TTS_WORKER__MODELS"] = json.dumps(list(self.models))
        env["TTS_INTAKE__SIGNING_KEY"] = self.intake_signing_key
        env.update(self._runpod_env)
        env.update(self.extra_env)
        # Laid out as deployed: voice files in a bucket of their own (only its objects wake the
        # voice registry) and API keys in a Firestore database of their own.
        bucket = env.get("TTS_BUCKET") or str(Settings.model_fields["bucket"].default)
        env.setdefault("TTS_VOICES__BUCKET", f"{bucket}-voices")
        env.setdefault("TTS_KEYS_DATABASE", str(topology.load().firestore.keys_database))
        return env

    def start(self) -> DevStack:
        try:
            self.emulators.start()
            push: list[str] = []
            if self.runpod:
                push = ["--push-endpoint", f"tts-runpod-dispatch={self._start_runpod()}"]
            intake_port = free_port()
            intake = self._spawn(
                "intake",
                [str(Path(sys.executable).with_name("functions-framework")),
                 "--source", str(REPO_ROOT / "functions" / "intake.py"), "--target", "intake",
                 "--signature-type", "cloudevent", "--host", "127.0.0.1",
                 "--port", str(intake_port)],
            )  # fmt: skip
            self._wait(intake, partial(_listening, intake_port))
            push += ["--push-endpoint", f"tts-intake=http://127.0.0.1:{intake_port}/"]
            self._python("-m", "infra", "apply", *push)
            self._write_env_file()
            self.api_key = self.create_key("dev")
            self.intake_key_id = key_id_for(hash_key(self.api_key))
            port = self.api_port or free_port()
            self.base_url = f"http://127.0.0.1:{port}"
            api = self._spawn(
                "api",
                [str(Path(sys.executable).with_name("functions-framework")),
                 "--source", str(REPO_ROOT / "functions" / "main.py"), "--target", "api",
                 "--host", "127.0.0.1", "--port", str(port)],
            )  # fmt: skip
            events_port = free_port()
            events = self._spawn(
                "events",
                [str(Path(sys.executable).with_name("functions-framework")),
                 "--source", str(REPO_ROOT / "functions" / "events.py"),
                 "--target", "voice_object_event", "--signature-type", "cloudevent",
                 "--host", "127.0.0.1", "--port", str(events_port)],
            )  # fmt: skip
            # Spawned before waiting on the others: its model load overlaps their start-up.
            worker = self._spawn("worker", [sys.executable, "-m", "gpu_worker"])
            self._wait(api, lambda: _answers(f"{self.base_url}/healthz"))
            self._wait(events, lambda: _listening(events_port))
            notifier = self._spawn(
                "notifier",
                [sys.executable, "-m", "infra.notifier",
                 "--target", f"http://127.0.0.1:{events_port}/"],
            )  # fmt: skip
            self._wait(notifier, partial(_logged, notifier, "notifier ready"))
            if self.monitor_every_s is not None:
                monitor = self._spawn(
                    "monitor",
                    [sys.executable, "-m", MONITOR_MODULE, "--every", str(self.monitor_every_s)],
                )
                self._wait(monitor, partial(_logged, monitor, '"monitor ready"'))
            self._wait(worker, partial(_logged, worker, '"worker ready"'))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_all(reversed(self.processes))  # together: each one's shutdown takes a second or so
        self.processes.clear()
        if self.local_runpod is not None:
            self.local_runpod.stop()
            self.local_runpod = None
        self.emulators.stop()
        if self.env_file is not None:
            self.env_file.unlink(missing_ok=True)

    def tool_env(self) -> dict[str, str]:
        """What the operator tools need to reach this stack: its emulators and the settings that
        name its data (project, bucket, collection prefix, reply topics, the intake key)."""
        env = self.env
        names = {*self.emulators.env, *TOOL_SETTINGS}
        found = {name: env[name] for name in sorted(names) if name in env}
        # The buckets are written even when they are the defaults.
        return {**found, "TTS_BUCKET": self.bucket, "TTS_VOICES__BUCKET": self.voices_bucket}

    def _write_env_file(self) -> None:
        if self.env_file is not None:
            write_env_file(self.env_file, self.tool_env())

    def _start_runpod(self) -> str:
        """Start the RunPod side; return the dispatcher's URL for the push subscription."""
        webhook_port, dispatcher_port = free_port(), free_port()
        handler_env = {
            k: v
            for k, v in self.env.items()
            if not k.startswith(("GOOGLE", "PUBSUB_", "FIRESTORE_", "STORAGE_"))
        }
        self.local_runpod = LocalRunPod(
            handler=[sys.executable, "-m", "gpu_worker.runpod_handler"],
            env={**handler_env, "TTS_WORKER__DEVICE": "cpu"},
            log_dir=self.run_dir,
        ).start()
        home = {"id": "home-4090", "kind": "home_gpu", "priority": 10}
        # Only a monitor pass refreshes RunPod's health: it must stay fresh from one pass to
        # the next, or routing would count RunPod as down between passes.
        stale_after_s = max(10.0, 2 * (self.monitor_every_s or 0.0))
        self._runpod_env = {
            "TTS_BACKENDS": json.dumps([home, {"id": "runpod", "kind": "runpod", "priority": 20}]),
            "TTS_RUNPOD__ENDPOINT_ID": self.local_runpod.endpoint_id,
            "TTS_RUNPOD__API_KEY": self.local_runpod.api_key,
            "TTS_RUNPOD__BASE_URL": self.local_runpod.base_url,
            "TTS_RUNPOD__WEBHOOK_URL": f"http://127.0.0.1:{webhook_port}/",
            "TTS_RUNPOD__WEBHOOK_SECRET": secrets.token_hex(16),
            "TTS_MONITOR__STALE_AFTER_S": str(stale_after_s),
            "TTS_MONITOR__WEBHOOK_GRACE_S": "30",
        }
        framework = str(Path(sys.executable).with_name("functions-framework"))
        source = str(REPO_ROOT / "functions" / "runpod.py")
        for name, target, port, signature in (
            ("runpod-webhook", "runpod_webhook", webhook_port, "http"),
            ("runpod-dispatch", "runpod_dispatch", dispatcher_port, "cloudevent"),
        ):
            process = self._spawn(
                name,
                [framework, "--source", source, "--target", target,
                 "--signature-type", signature, "--host", "127.0.0.1", "--port", str(port)],
            )  # fmt: skip
            self._wait(process, partial(_listening, port))
        return f"http://127.0.0.1:{dispatcher_port}/"

    def start_worker(self, name: str) -> ManagedProcess:
        """Another 4090 worker process (e.g. after one was killed), ready when this returns."""
        worker = self._spawn(name, [sys.executable, "-m", "gpu_worker"])
        self._wait(worker, partial(_logged, worker, '"worker ready"'))
        return worker

    def process(self, name: str) -> ManagedProcess:
        return next(p for p in self.processes if p.name == name)

    def create_key(self, owner: str) -> str:
        """A new API key of ``owner``'s, as ``python -m functions.keys create`` makes one."""
        # Its own environment, never a .devstack/env another stack may have left behind.
        return self._python(
            "-m", "functions.keys", "--no-env-file", "create", "--owner", owner
        ).strip()

    def for_owner(self, owner: str) -> DevStack:
        """This running stack, called with a new key of ``owner``'s: the jobs and voices it
        lists are that owner's. The processes and emulators are this stack's own, shared and
        not copied: start and stop them here."""
        view = copy.copy(self)
        view.api_key = self.create_key(owner)
        view.intake_key_id = key_id_for(hash_key(view.api_key))
        return view

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers ----------------------------------------------------------------------------

    def _python(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, *args], env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise ProcessError(f"python {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        handle = spawn(name, argv, log_dir=self.run_dir, env=self.env, cwd=REPO_ROOT)
        self.processes.append(handle)
        return handle

    @staticmethod
    def _wait(process: ManagedProcess, ready: Callable[[], bool]) -> None:
        process.wait_until(ready, timeout_s=READY_TIMEOUT_S)


def _logged(process: ManagedProcess, line: str) -> bool:
    return line in process.log_path.read_text(errors="replace")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback only
            return True
    except OSError:  # URLError is an OSError
        return False


def _model_sources(models: str) -> tuple[str, ...]:
    """``tiny``: one offline tiny model of each type; else comma-separated ids or directories."""
    if models != "tiny":
        return tuple(m.strip() for m in models.split(",") if m.strip())
    from gpu_worker.tiny_model import build_tiny_model

    return tuple(
        str(build_tiny_model(TINY_MODEL_DIR / model_type, model_type=model_type))
        for model_type in ModelType
    )


def _listener_env(models: str) -> dict[str, str]:
    """``tiny``: the offline tiny ASR and aligner as well, so the stack checks its audio and
    times its words as a deployed worker would (their words are noise, as the audio is)."""
    if models != "tiny":
        return {}
    from gpu_worker.tiny_asr import TinyListener, build_tiny_asr

    built = {kind: build_tiny_asr(TINY_MODEL_DIR / kind, kind=kind) for kind in TinyListener}
    return listener_env(asr=built[TinyListener.ASR], aligner=built[TinyListener.ALIGNER])


def listener_env(*, asr: Path, aligner: Path) -> dict[str, str]:
    """The worker settings that load these listening models."""
    return {
        "TTS_WORKER__VERIFY__ASR_MODEL": str(asr),
        "TTS_WORKER__VERIFY__ALIGNER_MODEL": str(aligner),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.devstack")
    parser.add_argument(
        "--model", default="", help="HF ids or directories, comma-separated; 'tiny' for noise"
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--runpod",
        action="store_true",
        help="also RunPod: the handler behind a local RunPod API, the dispatcher and the webhook",
    )
    args = parser.parse_args()
    from shared.settings import DEFAULT_MODEL

    models = _model_sources(args.model or DEFAULT_MODEL)
    port = args.port if _port_free(args.port) else free_port()
    stack = DevStack(
        models=models,
        api_port=port,
        runpod=args.runpod,
        env_file=REPO_ROOT / ENV_FILE,
        extra_env=_listener_env(args.model),
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.start()
    except ProcessError as exc:
        sys.stderr.write(f"\nmake run failed:\n{exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    body = '{"text": "Hello from the gateway.", "speaker": "Vivian", "language": "english"}'
    auth = f"Authorization: Bearer {stack.api_key}"
    lines = [
        "",
        f"API base URL : {stack.base_url}",
        f"API key (dev): {stack.api_key}",
        f"intake key id: {stack.intake_key_id}  (its signing secret: GET /v1/intake/secret)",
        f"tools' env   : {ENV_FILE} (python -m functions.keys list, python -m "
        "functions.intake_replay)",
        f"logs         : {stack.run_dir}",
        f"monitor      : a pass every {stack.monitor_every_s:g} s (the cloud's schedule)",
        "",
        "Submit, wait, and fetch a WAV:",
        f"  JOB=$(curl -s -X POST {stack.base_url}/v1/tts/jobs -H '{auth}' "
        f"-H 'Content-Type: application/json' -d '{body}' | python3 -c 'import json,sys; "
        'print(json.load(sys.stdin)["id"])\')',
        f"  until curl -s {stack.base_url}/v1/jobs/$JOB -H '{auth}' | grep -q '\"succeeded\"'; "
        "do sleep 0.5; done",
        f"  curl -sL {stack.base_url}/v1/jobs/$JOB/audio -H '{auth}' -o hello.wav",
        "",
        "Make a voice from that clip, then list voices (needs a Base model):",
        f"  curl -s -X POST {stack.base_url}/v1/voices -H '{auth}' -F name=Hello "
        "-F 'ref_text=Hello from the gateway.' -F ref_audio=@hello.wav",
        f"  curl -s {stack.base_url}/v1/voices -H '{auth}'",
        "",
        f"Drop a .pt prompt into gs://{stack.voices_bucket}/voice-prompts/ to register it "
        "(a local notifier stands in for GCS events).",
        "",
        "Ctrl-C stops everything.",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    try:
        while True:
            for process in stack.processes:
                process.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        sys.stdout.write("\nstopping...\n")
        return 0
    except ProcessError as exc:
        sys.stderr.write(f"\n{exc}\n")
        return 1
    finally:
        stack.stop()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


if __name__ == "__main__":
    sys.exit(main())
