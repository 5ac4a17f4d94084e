"""Structural rules a later change could quietly break.

The import rules (layers, private modules, cycles) live in ``test_layers.py``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


def test_no_environment_reads_outside_settings() -> None:
    offenders = []
    for path in product_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            text = ast.unparse(node) if isinstance(node, ast.Attribute | ast.Call) else ""
            if text.startswith(("os.environ", "os.getenv")):
                offenders.append(f"{path.relative_to(ROOT)}: {text}")
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
    # And it runs tasks through the same executor as the 4090's runner.
    handler = (ROOT / "gpu_worker" / "runpod_handler.py").read_text()
    bootstrap = (ROOT / "gpu_worker" / "bootstrap.py").read_text()
    assert "TaskExecutor(" in handler
    assert "TaskExecutor(" in bootstrap


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
    assert [a.arg for a in build.args.kwonlyargs] == ["models"]
    handler = next(
        n for n in ast.walk(build) if isinstance(n, ast.FunctionDef) and n.name == "handler"
    )
    assert not {"load", "load_models", "from_pretrained"} & {
        c.rsplit(".", 1)[-1] for c in calls(handler)
    }


def test_routing_and_failover_name_no_backend() -> None:
    """No backend may be the one path to a GPU. Backends come from settings; the
    router, the monitor and the dispatcher must not special-case any of them."""
    for module in ("routing.py", "monitor.py", "dispatch.py", "jobs.py", "casting.py"):
        text = (ROOT / "shared" / "usecases" / module).read_text()
        assert "home-4090" not in text, module
