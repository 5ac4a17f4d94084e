"""The project's import graph, read from source with ``ast`` (nothing is imported).

Every import counts: module level, inside functions, and under ``TYPE_CHECKING``, because a
cycle or an upward import hidden in any of them is still a knot a reader has to untie.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("shared", "functions", "gpu_worker", "infra", "cli")


@dataclass(frozen=True, slots=True)
class Import:
    importer: str
    """The importing module, dotted."""
    target: str
    """The imported module, dotted (a package's ``__init__`` is the package's name)."""
    names: tuple[str, ...]
    """What ``from target import ...`` took from it; empty for ``import target``."""
    line: int

    def __str__(self) -> str:
        what = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.importer}:{self.line} -> {self.target}{what}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    return {
        module_name(root, path): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }


def imports(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    """Every import between the project's own modules."""
    modules = project_modules(root, packages)
    found: list[Import] = []
    for importer, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            found.extend(_edges(importer, node, modules, is_package=is_package))
    return found


def _edges(
    importer: str, node: ast.AST, modules: dict[str, Path], *, is_package: bool
) -> Iterator[Import]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in modules:
                yield Import(importer, alias.name, (), node.lineno)
    elif isinstance(node, ast.ImportFrom):
        base = _absolute(importer, node, is_package=is_package)
        if base not in modules:
            return
        # ``from package import module`` depends on the submodule, not on the package.
        plain = []
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in modules:
                yield Import(importer, submodule, (), node.lineno)
            else:
                plain.append(alias.name)
        if plain:
            yield Import(importer, base, tuple(plain), node.lineno)


def _absolute(importer: str, node: ast.ImportFrom, *, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = importer.split(".")
    if not is_package:
        package = package[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, node.module] if node.module else package)


def cycles(edges: list[Import]) -> list[list[str]]:
    """Strongly connected groups of more than one module, or a module importing itself."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups
