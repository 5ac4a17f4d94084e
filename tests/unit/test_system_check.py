"""The worker's start-up check of its native libraries: clear messages, sox only a note."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType, ModuleType, SimpleNamespace

import pytest

from gpu_worker import system_check
from shared.domain.errors import WorkerPoisoned


def test_this_machine_has_what_the_worker_needs() -> None:
    report = system_check.check()
    assert report.ok, report.problems


def test_a_missing_libsndfile_says_how_to_get_it() -> None:
    def importer(name: str) -> ModuleType:
        if name == "soundfile":
            raise OSError("cannot load library 'libsndfile.so'")
        return importlib.import_module(name)

    report = system_check.check(importer=importer, which=lambda _: "/usr/bin/sox")
    assert not report.ok
    (problem,) = report.problems
    assert "libsndfile cannot be loaded" in problem
    assert "libsndfile1" in problem
    assert report.notes == ()


def test_an_old_libsndfile_without_mp3_is_refused() -> None:
    old = ModuleType("soundfile")
    old.available_formats = lambda: {"WAV": "", "FLAC": "", "OGG": ""}  # type: ignore[attr-defined]
    old.__libsndfile_version__ = "1.0.28"  # type: ignore[attr-defined]

    def importer(name: str) -> ModuleType:
        return old if name == "soundfile" else importlib.import_module(name)

    (problem,) = system_check.check(importer=importer).problems
    assert "1.0.28" in problem
    assert "MP3" in problem


def test_a_missing_pyav_says_how_to_get_it() -> None:
    def importer(name: str) -> ModuleType:
        if name == "av":
            raise ImportError("DLL load failed while importing _core")
        return importlib.import_module(name)

    (problem,) = system_check.check(importer=importer).problems
    assert "PyAV (FFmpeg) cannot be loaded" in problem


def test_sox_missing_is_a_note_not_a_problem() -> None:
    report = system_check.check(which=lambda _: None)
    assert report.ok
    assert any("sox is not installed" in note for note in report.notes)


class StubWorker:
    """What ``bootstrap()`` returns; ``serve`` stands in for the subscriber loop."""

    def __init__(self, serve: Callable[[threading.Event], None]) -> None:
        self.subscriber = SimpleNamespace(serve=serve)


def entrypoint(
    monkeypatch: pytest.MonkeyPatch, calls: list[str], report: system_check.Report, worker: object
) -> ModuleType:
    """``gpu_worker/__main__.py`` run as a fresh module whose bootstrap is a stub: the real one
    imports the model stack. Every step it takes is recorded in ``calls``."""

    def check() -> system_check.Report:
        calls.append("check")
        return report

    def bootstrap() -> object:
        calls.append("bootstrap")
        return worker

    stub = ModuleType("gpu_worker.bootstrap")
    stub.bootstrap = bootstrap  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gpu_worker.bootstrap", stub)
    path = Path(system_check.__file__).parent / "__main__.py"
    spec = importlib.util.spec_from_file_location("worker_entrypoint_under_test", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "system_check", SimpleNamespace(check=check))
    monkeypatch.setattr(module, "configure_logging", lambda: None)
    return module


def test_a_failed_check_stops_the_worker_before_it_loads_anything(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    report = system_check.Report(problems=("libsndfile cannot be loaded",), notes=())
    worker = StubWorker(lambda _stop: calls.append("serve"))
    module = entrypoint(monkeypatch, calls, report, worker=worker)
    with caplog.at_level(logging.ERROR, logger="gpu_worker"):
        exit_code = module.main()
    assert calls == ["check"]  # never bootstrap(), which loads the models
    assert exit_code == 2
    assert [r.getMessage() for r in caplog.records] == [
        "worker cannot start: libsndfile cannot be loaded"
    ]


def test_a_passing_check_starts_the_worker_which_ctrl_break_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handlers: dict[int, Callable[[int, FrameType | None], None]] = {}
    monkeypatch.setattr(
        signal, "signal", lambda signum, handler: handlers.update({signum: handler})
    )
    monkeypatch.setattr(signal, "SIGBREAK", 21, raising=False)  # as on Windows
    calls: list[str] = []

    def serve(stop: threading.Event) -> None:
        calls.append("serve")
        assert not stop.is_set()
        handlers[21](21, None)  # NSSM stops a Windows service with Ctrl-Break
        assert stop.is_set()

    report = system_check.Report(problems=(), notes=("sox is not installed",))
    module = entrypoint(monkeypatch, calls, report, worker=StubWorker(serve))
    assert module.main() == 0
    assert calls == ["check", "bootstrap", "serve"]
    assert set(handlers) == {signal.SIGTERM, signal.SIGINT, 21}


def test_a_cuda_fault_exits_the_worker_non_zero_for_its_supervisor_to_start_a_fresh_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)
    calls: list[str] = []

    def serve(stop: threading.Event) -> None:
        calls.append("serve")
        raise WorkerPoisoned("CUDA fault: CUDA error: device-side assert triggered")

    report = system_check.Report(problems=(), notes=())
    module = entrypoint(monkeypatch, calls, report, worker=StubWorker(serve))
    assert module.main() == 70  # EX_SOFTWARE: NSSM and systemd restart on a non-zero exit
    assert calls == ["check", "bootstrap", "serve"]
