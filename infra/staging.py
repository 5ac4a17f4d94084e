"""Stage the Cloud Functions declared in ``topology.yaml`` for Terraform to zip and deploy.

Cloud Functions wants ``main.py`` at the root of its source; each function gets a staged
directory with a one-line ``main.py`` that re-exports its entry point, plus ``functions/``,
``shared/`` and the functions' ``requirements.txt`` (no torch, no qwen-tts) with the function's
own extras (the voice registry adds the CPU build of torch to load prompt files safely).

The staged bytes depend only on the repository, never on when or where they were staged, so an
unchanged checkout zips to the same archive and a second ``terraform apply`` changes nothing.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from infra.topology import Function, Topology

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("functions", "shared")

# A pin with a local version label (``torch==2.11.0+cpu``) exists only on the index that
# publishes that build, never on the default one.
_LOCAL_VERSION = re.compile(r"==[^+\s]+\+\S+")


class StagingError(ValueError):
    pass


def needs_extra_index(function: Function) -> bool:
    return any(_LOCAL_VERSION.search(r) for r in function.extra_requirements)


def requirements(function: Function, *, extra_index_url: str | None = None) -> str:
    """The function's ``requirements.txt``: the shared set plus its own extras.

    The Cloud Functions Python build installs ``requirements.txt`` with pip, which honours
    ``--extra-index-url`` lines in the file: that is how a ``+cpu`` pin finds its wheel.
    """
    text = (REPO_ROOT / "requirements.txt").read_text()
    if not function.extra_requirements:
        return text
    lines = ["", "# This function only:"]
    if needs_extra_index(function):
        if not extra_index_url:
            raise StagingError(
                f"{function.name} pins {', '.join(function.extra_requirements)}, a build only an "
                "extra index serves (PyTorch's CPU wheel index): pass --extra-index-url"
            )
        lines.append(f"--extra-index-url {extra_index_url}")
    lines += function.extra_requirements
    return text + "\n".join(lines) + "\n"


def stage(target: Path, *, function: Function, extra_index_url: str | None = None) -> Path:
    """One source directory per function: its own ``main.py`` and its own requirements."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, target / package, ignore=ignore)
    (target / "requirements.txt").write_text(
        requirements(function, extra_index_url=extra_index_url)
    )
    (target / "main.py").write_text(
        f'"""Cloud Functions source root for {function.name}."""\n\n'
        f"from {function.module} import {function.entry_point}\n\n"
        f"__all__ = [{function.entry_point!r}]\n"
    )
    return target


def stage_all(
    root: Path, topology: Topology, *, extra_index_url: str | None = None
) -> dict[str, Path]:
    """``root/<function name>/`` for every declared function (what Terraform zips)."""
    for function in topology.functions:  # refuse before writing anything
        requirements(function, extra_index_url=extra_index_url)
    return {
        f.name: stage(root / f.name, function=f, extra_index_url=extra_index_url)
        for f in topology.functions
    }
