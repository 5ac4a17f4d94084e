"""The architecture as a test: each folder is one layer, imports go only downward, nothing
reaches into another folder's private modules, and no import cycle exists anywhere.

Layers, lowest first (a module may import its own layer and those below):
``shared.domain`` < ``shared.wire`` < ``shared.settings`` < ``shared.usecases`` <
``shared.adapters`` < ``shared.bootstrap`` / ``shared.logs`` < the entry points (``functions``,
``gpu_worker``, and ``cli``, an HTTP client; none imports another) < ``infra`` (the local stack
and deployment tooling, which may start anything).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.imports import Import, cycles, imports, module_name

ROOT = Path(__file__).resolve().parents[2]

LAYERS: dict[str, int] = {
    "shared": 0,  # the package itself: a docstring
    "shared.domain": 0,
    "shared.wire": 1,
    "shared.settings": 2,
    "shared.usecases": 3,
    "shared.adapters": 4,
    "shared.bootstrap": 5,
    "shared.logs": 5,
    "functions": 6,
    "gpu_worker": 6,
    "cli": 6,
    "infra": 7,
}
ENTRY_POINTS = ("functions", "gpu_worker", "cli")
HEAVY = frozenset({"numpy", "torch", "torchaudio", "soundfile", "scipy", "qwen_tts"})
PROMPT_FILE_LOADER = "shared.domain.voice_file"


def layer(module: str) -> str:
    """The longest layer prefix of ``module``."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return prefix
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def upward(edge: Import) -> bool:
    source, target = layer(edge.importer), layer(edge.target)
    if LAYERS[target] > LAYERS[source]:
        return True
    # Entry points stand side by side: neither may lean on the other.
    top = {source.split(".")[0], target.split(".")[0]}
    return top <= set(ENTRY_POINTS) and len(top) == 2


def private(edge: Import) -> bool:
    """A module or name starting with ``_`` used from outside the folder that holds it."""
    folder_of_target = edge.target.rsplit(".", 1)[0]
    importer_folder = edge.importer.rsplit(".", 1)[0]
    hidden_module = any(
        p.startswith("_") and not p.startswith("__") for p in edge.target.split(".")
    )
    hidden_name = any(n.startswith("_") and not n.startswith("__") for n in edge.names)
    outside = not edge.importer.startswith(folder_of_target) or (
        hidden_name and importer_folder != folder_of_target
    )
    return (hidden_module or hidden_name) and outside


def violations(root: Path) -> list[str]:
    edges = imports(root)
    found = [f"upward: {e}" for e in edges if upward(e)]
    found += [f"private: {e}" for e in edges if private(e)]
    found += [f"cycle: {' <-> '.join(group)}" for group in cycles(edges)]
    return found


def test_imports_go_only_downward_with_no_private_reach_and_no_cycles() -> None:
    assert violations(ROOT) == []


def test_every_module_has_a_layer() -> None:
    for path in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("functions/**/*.py")]:
        layer(module_name(ROOT, path))


def test_shared_holds_no_fakes_and_no_numpy_or_torch_but_the_prompt_file_loader() -> None:
    heavy, fakes = [], []
    for path in (ROOT / "shared").rglob("*.py"):
        module = module_name(ROOT, path)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                names = []
            if any(n.split(".")[0] in HEAVY for n in names) and module != PROMPT_FILE_LOADER:
                heavy.append(module)
            if isinstance(node, ast.ClassDef) and node.name.startswith(("Fake", "InMemory")):
                fakes.append(f"{module}.{node.name}")
    assert heavy == []
    assert fakes == []


# -- the checker itself must catch what it is for --------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name in ("shared", "functions", "gpu_worker", "infra"):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "__init__.py").touch()
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {
                "shared/domain/jobs.py": "from shared.usecases.gateway import Gateway\n",
                "shared/usecases/gateway.py": "Gateway = 1\n",
            },
            "upward: shared.domain.jobs:1 -> shared.usecases.gateway (Gateway)",
            id="domain-imports-a-use-case",
        ),
        pytest.param(
            {
                "functions/main.py": "import gpu_worker.runner\n",
                "gpu_worker/runner.py": "",
            },
            "upward: functions.main:1 -> gpu_worker.runner",
            id="entry-points-lean-on-each-other",
        ),
        pytest.param(
            {
                "shared/usecases/jobs.py": "from shared.adapters.gcs import _strip\n",
                "shared/adapters/gcs.py": "def _strip(): ...\n",
            },
            "upward: shared.usecases.jobs:1 -> shared.adapters.gcs (_strip)",
            id="use-case-imports-an-adapter",
        ),
        pytest.param(
            {
                "functions/api.py": "from shared.usecases.jobs import _submit\n",
                "shared/usecases/jobs.py": "def _submit(): ...\n",
            },
            "private: functions.api:1 -> shared.usecases.jobs (_submit)",
            id="private-name-from-another-folder",
        ),
        pytest.param(
            {
                "gpu_worker/tasks.py": "from shared.domain import _helpers\n",
                "shared/domain/_helpers.py": "",
            },
            "private: gpu_worker.tasks:1 -> shared.domain._helpers",
            id="private-module-from-another-folder",
        ),
        pytest.param(
            {
                "shared/usecases/a.py": "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from shared.usecases.b import B\n",
                "shared/usecases/b.py": "from shared.usecases import a\n",
            },
            "cycle: shared.usecases.a <-> shared.usecases.b",
            id="cycle-through-type-checking",
        ),
    ],
)
def test_the_checker_finds_each_kind_of_violation(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    assert expected in violations(_tree(tmp_path, files))


def test_the_checker_allows_downward_and_same_folder_private_imports(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "shared/usecases/jobs.py": "from shared.domain.jobs import Job\n"
            "from shared.usecases._util import x\n",
            "shared/usecases/_util.py": "x = 1\n",
            "shared/domain/jobs.py": "Job = 1\n",
            "functions/main.py": "from shared.usecases import jobs\n",
        },
    )
    assert violations(root) == []
