"""``qtts render`` as a person runs it: the installed console script, as a subprocess, against
the local stack (functions-framework, emulators, the worker process, the tiny model). Killed
part-way, then run again: it finishes from where it stopped, with the same batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import soundfile as sf

from infra.devstack import DevStack

pytestmark = pytest.mark.e2e

QTTS = Path(sys.executable).with_name("qtts")
PARAGRAPHS = [f"Paragraph {i}. It has a sentence or two, and then it ends." for i in range(8)]


@pytest.fixture(scope="module")
def stack(tiny_model_dir: str) -> Iterator[DevStack]:
    with DevStack(models=(tiny_model_dir,), extra_env={"TTS_WORKER__HEARTBEAT_S": "1"}) as running:
        yield running


def render(stack: DevStack, book: Path, out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "QTTS_BASE_URL": stack.base_url, "QTTS_API_KEY": stack.api_key}
    return subprocess.Popen(
        [str(QTTS), "render", str(book), "-o", str(out), "--voice", "vivian", "--format", "wav",
         "--max-chars", "70"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def batches(stack: DevStack) -> list[dict[str, object]]:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    jobs = requests.get(f"{stack.base_url}/v1/jobs", headers=headers, timeout=30).json()["jobs"]
    return [j for j in jobs if j["mode"] == "batch"]


def test_render_resumes_after_an_interruption(stack: DevStack, tmp_path: Path) -> None:
    assert QTTS.exists(), "the project installs the qtts console script"
    book = tmp_path / "chapter-1.txt"
    book.write_text("\n\n".join(PARAGRAPHS))
    out = tmp_path / "out"

    first = render(stack, book, out)
    deadline = time.monotonic() + 120
    while not list(out.glob("*.wav")):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "no item was ever downloaded"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)  # no clean-up: what is on disk is all that is left
    first.wait(timeout=10)
    early = {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")}
    assert 0 < len(early) < len(PARAGRAPHS)
    for path in early:  # a file that exists is a finished one: downloads land under temp names
        assert sf.info(str(out / path)).duration > 0

    second = render(stack, book, out)
    _, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr
    files = sorted(out.glob("*.wav"))
    assert [p.name for p in files] == [f"chapter-1-{i:04d}.wav" for i in range(1, 9)]
    for path in files:
        info = sf.info(str(path))
        assert info.samplerate == 24_000
        assert info.duration > 0
    # What the first run had downloaded was kept, not fetched again; and it was one batch.
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav") if p.name in early} == early
    assert len(batches(stack)) == 1


def test_render_join_makes_the_whole_chapter_from_its_items(
    stack: DevStack, tmp_path: Path
) -> None:
    """The join job runs on the real worker process: the joined WAV is the items end to end."""
    book = tmp_path / "chapter-2.txt"
    book.write_text("\n\n".join(PARAGRAPHS[:3]))
    out = tmp_path / "joined"
    env = {**os.environ, "QTTS_BASE_URL": stack.base_url, "QTTS_API_KEY": stack.api_key}
    done = subprocess.run(
        [str(QTTS), "render", str(book), "-o", str(out), "--voice", "vivian", "--format", "wav",
         "--max-chars", "70", "--join", "--gap-ms", "200"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    items = sorted(out.glob("chapter-2-*.wav"))
    assert len(items) == 3
    joined = sf.info(str(out / "chapter-2.wav"))
    frames = sum(sf.info(str(p)).frames for p in items) + 2 * round(0.2 * 24_000)
    assert joined.samplerate == 24_000
    assert joined.frames == frames
