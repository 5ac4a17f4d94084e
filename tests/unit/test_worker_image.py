"""Static checks of the RunPod worker image: gpu_worker/Dockerfile, .dockerignore, test_input.json.

Docker is not needed: the Dockerfile is parsed line by line (continuations joined, comments
dropped), which is enough to catch a COPY of a missing or forbidden path, requirements that are
not the repository's, a torch pin that drifted, or baked model paths that do not match.
"""

from __future__ import annotations

import importlib.util
import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from shared.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "gpu_worker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
TEST_INPUT = ROOT / "gpu_worker" / "test_input.json"
REQUIREMENTS = "gpu_worker/requirements.txt"
RUNTIME_SOURCES = {"shared", "gpu_worker"}
"""What the final image may copy from the build context: the shared core and the worker."""
FORBIDDEN = {"tests", "functions", "infra", "bench", ".venv", ".git", ".cache"}


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions, with ``\\`` continuations joined and comment lines dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and pending):
            continue  # comments and blank lines may sit inside a continued instruction
        if not line:
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return result


def stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults (before the first FROM) and the build stages in order."""
    global_args: dict[str, str] = {}
    found: list[Stage] = []
    for ins in instructions(text):
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(found))
            found.append(Stage(name))
        elif not found:
            assert ins.keyword == "ARG", f"{ins.keyword} before the first FROM"
            key, _, value = shlex.split(ins.args)[0].partition("=")
            global_args[key] = value
        else:
            found[-1].instructions.append(ins)
    return global_args, found


@dataclass(frozen=True)
class Copy:
    stage: str
    from_stage: str | None
    sources: tuple[str, ...]
    dest: str
    workdir: str


def copies(all_stages: list[Stage]) -> list[Copy]:
    result = []
    for stage in all_stages:
        workdir = "/"
        for ins in stage.instructions:
            if ins.keyword == "WORKDIR":
                workdir = posixpath.join(workdir, ins.args)
            if ins.keyword not in {"COPY", "ADD"}:
                continue
            words = shlex.split(ins.args)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            if paths and paths[0].startswith("["):
                paths = json.loads(" ".join(paths))
            from_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            result.append(Copy(stage.name, from_stage, tuple(paths[:-1]), paths[-1], workdir))
    return result


def context_copies(all_stages: list[Stage]) -> list[Copy]:
    return [c for c in copies(all_stages) if c.from_stage is None]


def env(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for ins in stage.all("ENV"):
        for word in shlex.split(ins.args):
            key, _, value = word.partition("=")
            values[key] = value
    return values


def pin(requirements: Path, name: str) -> str:
    for raw in requirements.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        if req.name.lower() == name:
            (spec,) = req.specifier
            assert spec.operator == "==", f"{name} is not pinned exactly: {line}"
            return spec.version
    raise AssertionError(f"{name} is not in {requirements}")


@pytest.fixture(scope="module")
def parsed() -> tuple[dict[str, str], list[Stage]]:
    return stages(DOCKERFILE.read_text())


def runtime(parsed: tuple[dict[str, str], list[Stage]]) -> Stage:
    return parsed[1][-1]


def test_cmd_runs_the_runpod_handler(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    cmds = runtime(parsed).all("CMD")
    assert cmds, "the final stage has no CMD"
    assert json.loads(cmds[-1].args) == ["python", "-m", "gpu_worker.runpod_handler"]
    assert not runtime(parsed).all("ENTRYPOINT")


def test_every_copy_source_exists(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    stage_names = {s.name for s in parsed[1]}
    for c in copies(parsed[1]):
        assert c.sources, f"COPY without a source in stage {c.stage}"
        if c.from_stage is not None:
            assert c.from_stage in stage_names, f"COPY --from={c.from_stage}: no such stage"
            continue
        for source in c.sources:
            assert not any(ch in source for ch in "*?["), f"wildcard COPY source {source}"
            assert (ROOT / source).exists(), f"COPY source {source} is not in the repository"
    assert not any(s.all("ADD") for s in parsed[1]), "use COPY; ADD can fetch and unpack"


def test_the_image_copies_only_the_worker_code(
    parsed: tuple[dict[str, str], list[Stage]],
) -> None:
    for c in context_copies(parsed[1]):
        for source in c.sources:
            top = posixpath.normpath(source).split("/")[0]
            assert top not in FORBIDDEN | {".", ".."}, f"the image copies {source}"
    final = {
        posixpath.normpath(s).split("/")[0]
        for c in context_copies(parsed[1])
        if c.stage == runtime(parsed).name
        for s in c.sources
    }
    assert final == RUNTIME_SOURCES


def test_pip_installs_the_repositorys_requirements(
    parsed: tuple[dict[str, str], list[Stage]],
) -> None:
    (builder,) = [s for s in parsed[1] if any("-r " in i.args for i in s.all("RUN"))]
    installs = [
        (m.group(2), "--no-deps" in m.group(1))
        for ins in builder.all("RUN")
        for m in re.finditer(r"pip install\b([^&;|]*?)\s-r\s+(\S+)", ins.args)
    ]
    # The requirements with their dependencies, then qwen-asr without its pins (it pins
    # another transformers than qwen-tts; gpu_worker/requirements-asr.txt says why).
    assert installs == [(installs[0][0], False), (installs[1][0], True)], installs
    installed = [path for path, _ in installs]
    in_image: dict[str, str] = {}  # path in the image -> path in the repository
    for c in context_copies([builder]):
        dest = posixpath.join(c.workdir, c.dest)
        for source in c.sources:
            is_dir = c.dest.endswith("/") or len(c.sources) > 1
            target = posixpath.join(dest, posixpath.basename(source)) if is_dir else dest
            in_image[posixpath.normpath(target)] = posixpath.normpath(source)
    workdir = next(c.workdir for c in context_copies([builder]))
    top = posixpath.normpath(posixpath.join(workdir, installed[0]))
    assert in_image.get(top) == REQUIREMENTS
    listening = posixpath.normpath(posixpath.join(workdir, installed[1]))
    assert in_image.get(listening) == "gpu_worker/requirements-asr.txt"
    # The files it includes (-r) and constrains with (-c) sit at the same relative paths.
    nested = re.findall(r"^-[rc]\s+(\S+)", (ROOT / REQUIREMENTS).read_text(), re.MULTILINE)
    assert nested, f"{REQUIREMENTS} no longer includes ../requirements.txt or constraints.txt"
    for ref in nested:
        repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(REQUIREMENTS), ref))
        image_path = posixpath.normpath(posixpath.join(posixpath.dirname(top), ref))
        assert (ROOT / repo_path).is_file(), f"{REQUIREMENTS} refers to missing {repo_path}"
        assert in_image.get(image_path) == repo_path, f"{ref} is not copied beside {top}"


def test_torch_pin_matches_the_requirements(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    requirements = ROOT / REQUIREMENTS
    torch = pin(requirements, "torch")
    assert parsed[0]["TORCH_VERSION"] == torch
    assert pin(requirements, "torchaudio") == torch, "the Dockerfile installs both at one version"


def test_torch_cuda_matches_the_installed_default_wheel(
    parsed: tuple[dict[str, str], list[Stage]],
) -> None:
    """Where this checkout has the pinned CUDA wheel installed, TORCH_CUDA names its CUDA."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        pytest.skip("torch is not installed")
    version_py = Path(spec.origin).parent / "version.py"
    text = version_py.read_text()
    version = re.search(r"__version__ = '([^'+]+)", text)
    cuda = re.search(r"^cuda: Optional\[str\] = '([^']+)'", text, re.MULTILINE)
    if version is None or cuda is None or version.group(1) != parsed[0]["TORCH_VERSION"]:
        pytest.skip("the installed torch is not the pinned CUDA build")
    assert parsed[0]["TORCH_CUDA"] == cuda.group(1)


def test_baked_model_paths_match_the_models(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    args = parsed[0]
    repos = [spec.split("@", 1)[0] for spec in args["MODELS"].split()]
    paths = json.loads(args["MODEL_PATHS"])
    assert paths == [f"/models/{repo.rsplit('/', 1)[-1]}" for repo in repos]
    assert WorkerSettings(models=tuple(paths)).models == tuple(paths)
    assert env(runtime(parsed))["TTS_WORKER__MODELS"] == "${MODEL_PATHS}"


def test_runtime_is_unbuffered_offline_and_not_root(
    parsed: tuple[dict[str, str], list[Stage]],
) -> None:
    values = env(runtime(parsed))
    assert values["PYTHONUNBUFFERED"] == "1"
    assert values["HF_HUB_OFFLINE"] == "1"
    users = runtime(parsed).all("USER")
    assert users, "the worker would run as root"
    assert users[-1].args.split(":")[0] not in {"root", "0"}


def test_test_input_is_a_runpod_job() -> None:
    job = json.loads(TEST_INPUT.read_text())
    assert isinstance(job, dict)
    assert isinstance(job.get("input"), dict)
    assert job["input"]


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            else:
                ch = pattern[i]
                out += {"*": "[^/]*", "?": "[^/]"}.get(ch, re.escape(ch))
                i += 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = posixpath.normpath(raw.lstrip("!").strip("/"))
        if any(regex(pattern).match(c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_context_small_but_complete(
    parsed: tuple[dict[str, str], list[Stage]],
) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for path in (".venv/bin/python", ".git/HEAD", "tests/unit/x.py", ".cache/x", "bench/x.py"):
        assert dockerignore_excludes(patterns, path), f".dockerignore lets {path} through"
    assert dockerignore_excludes(patterns, "shared/__pycache__/settings.cpython-311.pyc")
    needed = [s for c in context_copies(parsed[1]) for s in c.sources]
    needed += ["shared/settings.py", "gpu_worker/engine.py"]
    for path in needed:
        assert not dockerignore_excludes(patterns, posixpath.normpath(path)), f"{path} ignored"


def test_the_test_input_is_a_valid_runpod_task() -> None:
    from shared.wire.runpod_io import RunPodInput

    payload = json.loads((ROOT / "gpu_worker" / "test_input.json").read_text())
    task = RunPodInput.model_validate(payload["input"])
    assert task.urls.audio is not None
