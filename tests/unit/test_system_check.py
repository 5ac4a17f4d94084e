"""The worker's start-up check of its native libraries: clear messages, sox only a note."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from gpu_worker import system_check


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


def test_the_worker_entrypoint_runs_the_check_before_loading_anything() -> None:
    # Read, not imported: importing it loads the model stack.
    text = (Path(system_check.__file__).parent / "__main__.py").read_text()
    assert text.index("system_check.check()") < text.index("bootstrap()")
    assert "SIGBREAK" in text
