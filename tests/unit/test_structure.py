"""Structural rules a later change could quietly break (design: review section 5)."""

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
    """Review 4.5: v1 called gc.collect() after every synthesis."""
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
