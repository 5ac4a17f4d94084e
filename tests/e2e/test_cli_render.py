"""``qtts render`` as a person runs it: the installed console script, as a subprocess, against
the local stack (functions-framework, emulators, the worker process, the tiny model). Killed
part-way, then run again: it finishes from where it stopped, with the same batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import soundfile as sf

from infra.devstack import DevStack
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

QTTS = Path(sys.executable).with_name("qtts")
# A look at the batch every 0.1 s, easing off to 0.5 s, where a person's run waits 1 s to 5 s.
QTTS_ARGV = [str(QTTS), "--poll-interval", "0.1"]
PARAGRAPHS = [f"Paragraph {i}. It has a sentence or two, and then it ends." for i in range(8)]


@pytest.fixture(scope="module")
def stack(tiny_model_dir: str) -> Iterator[DevStack]:
    # One item at a time: the worker can be paused between items, part-way through a batch.
    env = {"TTS_WORKER__HEARTBEAT_S": "1", "TTS_WORKER__BATCH_SIZE": "1"}
    with DevStack(models=(tiny_model_dir,), extra_env=env) as running:
        yield running


def render(stack: DevStack, book: Path, out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "QTTS_BASE_URL": stack.base_url, "QTTS_API_KEY": stack.api_key}
    return subprocess.Popen(
        [*QTTS_ARGV, "render", str(book), "-o", str(out), "--voice", "vivian", "--format", "wav",
         "--max-chars", "70"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def batches(stack: DevStack) -> list[dict[str, object]]:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    jobs = requests.get(f"{stack.base_url}/v1/jobs", headers=headers, timeout=30).json()["jobs"]
    return [j for j in jobs if j["mode"] == "batch"]


def finished_items(stack: DevStack, batch_id: str) -> set[str]:
    """The keys of the batch's items that have succeeded, as its manifest lists them."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    manifest = requests.get(
        f"{stack.base_url}/v1/jobs/{batch_id}/manifest", headers=headers, timeout=30
    ).json()
    return {item["key"] for item in manifest["items"] if item["state"] == "succeeded"}


def on_disk(out: Path) -> set[str]:
    return {p.stem for p in out.glob("*.wav")}


def test_render_resumes_after_an_interruption(stack: DevStack, tmp_path: Path) -> None:
    assert QTTS.exists(), "the project installs the qtts console script"
    book = tmp_path / "chapter-1.txt"
    book.write_text("\n\n".join(PARAGRAPHS))
    out = tmp_path / "out"
    worker = stack.process("worker").process

    first = render(stack, book, out)

    def submitted() -> str | None:
        assert first.poll() is None, first.communicate()
        record = out / "render.json"
        return str(json.loads(record.read_text())["batch_id"]) if record.exists() else None

    batch_id = eventually(submitted, timeout_s=120, message="the render never submitted")
    # Part-way: the worker is paused once it has finished an item, so some are done and the
    # rest wait for it; the render fetches what is done, and is killed with nothing left to get.
    eventually(lambda: finished_items(stack, batch_id), timeout_s=300, interval_s=0.05)
    worker.send_signal(signal.SIGSTOP)
    try:
        eventually(
            lambda: on_disk(out) == finished_items(stack, batch_id),
            timeout_s=120,
            message=lambda: f"on disk {on_disk(out)}, done {finished_items(stack, batch_id)}",
        )
        first.send_signal(signal.SIGKILL)  # no clean-up: what is on disk is all that is left
        first.wait(timeout=30)
    finally:
        worker.send_signal(signal.SIGCONT)
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
        [*QTTS_ARGV, "render", str(book), "-o", str(out), "--voice", "vivian", "--format", "wav",
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
