"""What the Cloud Functions import is what ``requirements.txt`` installs.

A package that is only present because something else happens to pull it in today (as
``cryptography`` came with ``google-auth``) disappears the day that dependency changes; the
function then fails at import in production while every test here still passes.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCAL = {"shared", "functions", "infra", "gpu_worker", "cli", "tests", "bench"}
# The prompt-file loader needs torch; the voice-registry functions alone install it.
MODEL_STACK = {ROOT / "shared" / "domain" / "voice_file.py"}


def imported_modules(path: Path) -> set[str]:
    """Modules a file imports; ``from a.b import c`` counts as ``a.b.c`` where that is a module
    (``from google.cloud import firestore``: ``google.cloud`` itself belongs to no one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                found.add(
                    f"{node.module}.{alias.name}"
                    if _is_module(node.module, alias.name)
                    else node.module
                )
    return found


def _is_module(package: str, name: str) -> bool:
    if package.split(".")[0] in LOCAL or package.split(".")[0] in sys.stdlib_module_names:
        return False
    try:
        return importlib.util.find_spec(f"{package}.{name}") is not None
    except (ModuleNotFoundError, ValueError):  # an attribute, or a module without a spec
        return False


def distribution_of(module: str) -> str | None:
    """The installed distribution that provides ``module`` (namespace packages included)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin).resolve()
    for name in dict.fromkeys(_top_level_owners().get(module.split(".")[0], [])):
        root = Path(str(metadata.distribution(name).locate_file(""))).resolve()
        if origin.is_relative_to(root) and str(origin.relative_to(root)) in _files(name):
            return canonicalize_name(name)
    return None


@cache
def _top_level_owners() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


@cache
def _files(name: str) -> frozenset[str]:
    return frozenset(str(f) for f in metadata.distribution(name).files or ())


def declared(requirements: Path) -> set[str]:
    names: set[str] = set()
    for raw in requirements.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(canonicalize_name(Requirement(line).name))
    return names


def test_everything_the_functions_import_is_declared() -> None:
    sources = [
        path
        for folder in ("shared", "functions")
        for path in (ROOT / folder).rglob("*.py")
        if path not in MODEL_STACK
    ]
    needed: dict[str, set[str]] = {}
    for path in sources:
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top in LOCAL or top in sys.stdlib_module_names or top == "__future__":
                continue
            dist = distribution_of(module)
            assert dist is not None, f"{path.relative_to(ROOT)} imports {module}: not installed"
            needed.setdefault(dist, set()).add(str(path.relative_to(ROOT)))

    missing = needed.keys() - declared(ROOT / "requirements.txt")

    assert not missing, {dist: sorted(needed[dist]) for dist in missing}


def test_the_checker_sees_a_package_that_only_arrives_with_another() -> None:
    # google-auth brings cryptography today; the check must still name it on its own.
    assert distribution_of("cryptography.hazmat.primitives") == "cryptography"
    assert distribution_of("google.cloud.firestore") == "google-cloud-firestore"
