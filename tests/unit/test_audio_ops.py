from __future__ import annotations

import numpy as np
import pytest

from gpu_worker.audio.encoding import Waveform
from gpu_worker.audio.ops import join_waves

RATE = 24000


def constant(value: float, seconds: float, *, rate: int = RATE) -> Waveform:
    return Waveform(samples=np.full(int(seconds * rate), value, dtype=np.float32), sample_rate=rate)


def test_clips_are_joined_with_a_silent_gap() -> None:
    joined = join_waves([constant(0.5, 1.0), constant(-0.5, 0.5)], gap_s=0.2)
    assert joined.sample_rate == RATE
    assert joined.samples.dtype == np.float32
    assert len(joined.samples) == RATE + int(0.2 * RATE) + RATE // 2
    gap = joined.samples[RATE : RATE + int(0.2 * RATE)]
    assert not gap.any()


def test_internal_edges_fade_but_outer_edges_do_not() -> None:
    fade = int(0.010 * RATE)
    joined = join_waves([constant(0.5, 1.0), constant(0.5, 1.0)], gap_s=0.0).samples
    assert joined[0] == joined[-1] == pytest.approx(0.5)  # outer edges untouched
    assert joined[RATE - 1] < 0.5 / fade * 1.01  # end of the first clip ramps to ~0
    assert joined[RATE] == 0.0  # start of the second clip ramps up from 0
    assert joined[RATE + fade] == pytest.approx(0.5)
    assert np.abs(np.diff(joined)).max() <= 0.5 / fade * 1.01  # no step anywhere


def test_inputs_are_not_modified() -> None:
    first = constant(0.5, 0.1)
    join_waves([first, first])
    assert (first.samples == 0.5).all()


def test_one_clip_comes_back_unchanged() -> None:
    clip = constant(0.3, 0.5)
    np.testing.assert_array_equal(join_waves([clip]).samples, clip.samples)


def test_clips_shorter_than_two_fades_still_join() -> None:
    tiny = constant(0.5, 0.0005)  # 12 samples
    joined = join_waves([tiny, tiny, tiny], gap_s=0.0)
    assert len(joined.samples) == 36


@pytest.mark.parametrize(
    ("waves", "gap_s", "match"),
    [
        ([], 0.1, "at least one"),
        ([constant(0.1, 0.1), constant(0.1, 0.1, rate=16000)], 0.1, "sample rate"),
        ([constant(0.1, 0.1)], -0.1, "gap_s"),
    ],
)
def test_invalid_joins_are_programming_errors(
    waves: list[Waveform], gap_s: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        join_waves(waves, gap_s=gap_s)
