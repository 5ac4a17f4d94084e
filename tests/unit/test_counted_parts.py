"""A streamed job's pieces where the parts are counted (RunPod's signed URLs): the first goes
at once, each later one twice as long as the one before, up to ``GROWN_PIECE_S``; where they
are not (the bucket), every engine piece goes as it comes. Either way the parts end to end are
the audio, byte for byte."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest

from gpu_worker.audio.encoding import Waveform
from gpu_worker.tasks import GROWN_PIECE_S, Task, _Pieces
from shared.domain.audio_formats import AudioFormat

RATE = 24_000
PIECE_S = 0.64  # what an engine makes every 8 frames


@dataclass
class Parts:
    max_parts: int | None
    data: list[bytes] = field(default_factory=list)

    def publish_part(self, task: Task, *, index: int, data: bytes, fmt: AudioFormat) -> None:
        assert index == len(self.data)
        self.data.append(data)


def feed(io: Parts, pieces: int) -> list[float]:
    """``pieces`` engine pieces, published as PCM: the parts' lengths in seconds."""
    out = _Pieces(io, Task.__new__(Task), AudioFormat.PCM)  # type: ignore[arg-type]
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, int(PIECE_S * RATE) * pieces)
    for chunk in np.split(samples.astype(np.float32), pieces):
        out.add(Waveform(samples=chunk, sample_rate=RATE))
    assert out.finish() == len(io.data)
    return [len(d) / 2 / RATE for d in io.data]


@pytest.mark.parametrize("pieces", [1, 3, 40, 200])
def test_counted_parts_grow_to_last_long(pieces: int) -> None:
    io, each = Parts(max_parts=16), Parts(max_parts=None)
    lengths = feed(io, pieces)
    feed(each, pieces)
    assert b"".join(io.data) == b"".join(each.data)
    assert lengths[0] == pytest.approx(PIECE_S, abs=0.01)
    for before, after in itertools.pairwise(lengths[:-1]):  # the last may be shorter
        assert after >= min(2 * before, GROWN_PIECE_S) - 0.01
        assert after < min(2 * before, GROWN_PIECE_S) + PIECE_S + 0.01
    if pieces == 200:  # 128 s of audio: the first 15 parts carry some 90 s as it is made
        assert sum(lengths[:15]) > 90


def test_uncounted_parts_go_as_they_come() -> None:
    lengths = feed(Parts(max_parts=None), 40)
    assert len(lengths) == 40
    assert all(length == pytest.approx(PIECE_S, abs=0.01) for length in lengths)
