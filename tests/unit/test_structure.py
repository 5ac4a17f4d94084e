"""Structural rules a later change could quietly break.

The import rules (layers, private modules, cycles) live in ``test_layers.py``."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gpu_worker.bootstrap import bootstrap
from gpu_worker.runpod_handler import build_handler
from gpu_worker.synthesizer import ModelSet
from gpu_worker.tasks import Task, TaskExecutor
from shared.domain.backends import BackendConfig, BackendKind, BackendStatus
from shared.domain.jobs import Job, JobOutput, JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.settings import MonitorSettings, RunPodSettings, Settings
from shared.usecases.dispatch import Dispatch, dispatch
from shared.usecases.jobs import submit_job
from shared.usecases.monitor import run_monitor
from shared.wire.messages import JobMessage
from shared.wire.runpod_io import RunPodInput, RunPodTask, SignedUrls
from tests.support.backends import heartbeat
from tests.support.fakes import FakeRunPod
from tests.support.gateway import Fakes, fake_gateway

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = [ROOT / "shared", ROOT / "functions", ROOT / "gpu_worker"]


def product_files() -> list[Path]:
    return [p for d in PRODUCT for p in d.rglob("*.py")]


def calls(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            names.append(ast.unparse(node.func))
    return names


def test_functions_never_import_the_model_stack() -> None:
    """The Cloud Functions deploy without torch; importing their entrypoints must not need it."""
    code = (
        "import sys, functions.main, functions.api.app, functions.keys\n"
        "heavy = {'torch', 'qwen_tts', 'numpy', 'soundfile', 'runpod', 'transformers'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


ENVIRONMENT_WRITE = [
    "functions/tool_env.py: os.environ.update(values)",
    "functions/tool_env.py: os.environ.update",
    "functions/tool_env.py: os.environ",
]
"""The one exception, a write: the operator tools put ``make run``'s env file into their own
environment before any Settings or client exists, since the Google client libraries find the
emulators only there. It reads nothing (a second use of ``os.environ`` there is an offender)."""


def test_no_environment_reads_outside_settings() -> None:
    offenders = []
    for path in product_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            text = ast.unparse(node) if isinstance(node, ast.Attribute | ast.Call) else ""
            if text.startswith(("os.environ", "os.getenv")):
                offenders.append(f"{path.relative_to(ROOT)}: {text}")
    for allowed in ENVIRONMENT_WRITE:
        offenders.remove(allowed)
    assert offenders == []


def test_no_gc_collect_in_the_hot_path() -> None:
    """A full collection after every synthesis stalls the GPU for nothing."""
    offenders = [
        str(p.relative_to(ROOT))
        for p in product_files()
        if "gc.collect" in calls(ast.parse(p.read_text()))
    ]
    assert offenders == []


def test_no_unsafe_deserialisation() -> None:
    offenders = []
    for path in product_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = ast.unparse(node.func)
            if func in {"pickle.load", "pickle.loads", "torch.load"}:
                weights_only = [k for k in node.keywords if k.arg == "weights_only"]
                if (
                    func.startswith("pickle")
                    or not weights_only
                    or ast.unparse(weights_only[0].value) != "True"
                ):
                    offenders.append(f"{path.relative_to(ROOT)}: {ast.unparse(node)}")
    assert offenders == []


def test_shared_imports_no_entrypoint_code() -> None:
    offenders = []
    for path in (ROOT / "shared").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[0] in {"functions", "gpu_worker", "infra"}
            ):
                offenders.append(f"{path.relative_to(ROOT)}: {node.module}")
    assert offenders == []


def test_there_is_exactly_one_runpod_handler() -> None:
    """Two RunPod handlers would drift apart in the routes and inputs they accept."""
    starters = [
        str(p.relative_to(ROOT))
        for p in product_files()
        if "runpod.serverless.start" in calls(ast.parse(p.read_text()))
    ]
    assert starters == ["gpu_worker/runpod_handler.py"]


class NoModels(ModelSet):
    """Nothing loaded: each test here stands in for the executor's work."""

    def __init__(self) -> None:
        super().__init__([])

    @property
    def device(self) -> str:
        return "cpu"


class StubSubscriberClient:
    def subscription_path(self, project: str, name: str) -> str:
        return f"projects/{project}/subscriptions/{name}"


def test_runpod_and_the_4090_run_each_task_through_the_one_task_executor(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two executors would drift apart in the routes and inputs they accept."""
    ran: list[Task] = []

    def execute(self: TaskExecutor, task: Task) -> JobOutput:
        ran.append(task)
        return JobOutput(voice_id=f"voice-of-{task.id}")

    monkeypatch.setattr(TaskExecutor, "execute", execute)
    request = CustomVoiceRequest(text="Hi.", speaker="ryan")
    # RunPod: the handler built from loaded models.
    handler = build_handler(Settings(bucket="test-bucket"), models=NoModels())
    task = RunPodTask(id="job1", owner="alice", request=request, attempt=1)
    payload = RunPodInput(task=task, urls=SignedUrls()).model_dump(mode="json")
    output = handler({"id": "rp-1", "input": payload})
    assert (output["job_id"], output["voice_id"], output["failure"]) == (
        "job1",
        "voice-of-job1",
        None,
    )
    assert ran == [Task(id="job1", owner="alice", request=request, attempt=1)]
    # The 4090: the worker bootstrap() builds, running a job from its queue.
    gw = fake_gateway(Settings(bucket="test-bucket"), fakes)
    worker = bootstrap(
        gw.settings,
        gateway=gw,
        models=NoModels(),
        subscriber_client=StubSubscriberClient(),  # type: ignore[arg-type]
    )
    job = submit_job(
        replace(gw, new_id=lambda: "job2"),
        principal=Principal(owner="bob", scopes=frozenset({Scope.USER})),
        request=request,
    )
    worker.runner.run(JobMessage(job_id=job.id))
    assert ran[1:] == [Task(id="job2", owner="bob", request=request, attempt=1)]
    done = gw.jobs.get("job2")
    assert done is not None
    assert done.state is JobState.SUCCEEDED


def test_the_runpod_models_load_before_the_handler_exists() -> None:
    """A model loaded lazily inside the handler races concurrent requests. Here the handler can
    only be built from loaded models, and main() loads them first."""
    tree = ast.parse((ROOT / "gpu_worker" / "runpod_handler.py").read_text())
    main = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "main")
    in_order = sorted(
        (n for n in ast.walk(main) if isinstance(n, ast.Call)),
        key=lambda n: (n.lineno, n.col_offset),
    )
    names = [ast.unparse(n.func) for n in in_order]
    order = [c for c in names if c in {"load_models", "runpod.serverless.start"}]
    assert order == ["load_models", "runpod.serverless.start"]
    build = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "build_handler"
    )
    # The checking models (an ASR model, an aligner) load there too, before the handler exists.
    assert [a.arg for a in build.args.kwonlyargs] == ["models", "verifier"]
    handler = next(
        n for n in ast.walk(build) if isinstance(n, ast.FunctionDef) and n.name == "handler"
    )
    assert not {"load", "load_models", "from_pretrained"} & {
        c.rsplit(".", 1)[-1] for c in calls(handler)
    }


@pytest.mark.parametrize(("home", "cloud"), [("home-4090", "runpod"), ("attic-3090", "burst")])
def test_routing_and_failover_name_no_backend(fakes: Fakes, home: str, cloud: str) -> None:
    """No backend may be the one path to a GPU. Backends come from settings; the router, the
    monitor and the dispatcher work the same whatever the backends are called."""
    settings = Settings(
        bucket="test-bucket",
        backends=(
            BackendConfig(id=home, kind=BackendKind.HOME_GPU, priority=10, max_queue=2),
            BackendConfig(id=cloud, kind=BackendKind.RUNPOD, priority=20),
        ),
        runpod=RunPodSettings(
            backend_id=cloud,
            endpoint_id="ep1",
            api_key="k",  # type: ignore[arg-type]
            webhook_secret="s3cret",  # type: ignore[arg-type]
        ),
        monitor=MonitorSettings(stale_after_s=30, requeue_after_s=120),
    )
    gw = fake_gateway(settings, fakes)
    alice = Principal(owner="alice", scopes=frozenset({Scope.USER}))

    def submitted() -> Job:
        return submit_job(
            gw, principal=alice, request=CustomVoiceRequest(text="Hi.", speaker="eric")
        )

    def backend_of(job: Job) -> str | None:
        stored = gw.jobs.get(job.id)
        assert stored is not None
        return stored.backend

    gw.backends.heartbeat(heartbeat(backend_id=home, at=gw.clock()))
    queued = [submitted() for _ in range(2)]
    assert [backend_of(j) for j in queued] == [home, home]
    # The home GPU falls silent: its queue moves to RunPod, which dispatches it.
    fakes.clock.advance(31)
    report = run_monitor(gw, runpod=FakeRunPod())
    assert report.offline == [home]
    assert sorted(report.rerouted) == sorted(j.id for j in queued)
    assert [backend_of(j) for j in queued] == [cloud, cloud]
    cloud_doc = gw.backends.get(cloud)
    assert cloud_doc is not None
    assert cloud_doc.status is BackendStatus.ONLINE
    runpod = FakeRunPod()
    assert dispatch(gw, runpod, JobMessage(job_id=queued[0].id)) is Dispatch.DISPATCHED
    assert [RunPodInput.model_validate(s["payload"]).task.id for s in runpod.submitted] == [
        queued[0].id
    ]
    assert backend_of(submitted()) == cloud
    # It comes back: new work goes home again, until its queue is deeper than it takes.
    gw.backends.heartbeat(heartbeat(backend_id=home, at=gw.clock()))
    assert [backend_of(submitted()) for _ in range(3)] == [home, home, home]
    run_monitor(gw, runpod=FakeRunPod())  # counts the queue: 3 > max_queue 2
    assert backend_of(submitted()) == cloud
