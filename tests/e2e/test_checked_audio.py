"""Checked audio through the local stack as deployed: the worker process loads the tiny ASR
model and forced aligner beside the TTS models, a joined batch's items are checked by default,
each with every check, and its captions are served over its joined file, as a standard SRT
parser reads them: in order, inside the audio, the items' words in the items' order.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import srt

from infra.devstack import DevStack
from shared.domain.verification import Check
from tests.e2e.test_stack import call, finished

pytestmark = pytest.mark.e2e

ITEMS = ["The tide came in at dawn.", "Gulls cried over the empty pier."]


def manifest(stack: DevStack, batch_id: str, *, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        listed: dict[str, Any] = call(stack, "GET", f"/v1/jobs/{batch_id}/manifest").json()
        joined = listed.get("joined") or {}
        if joined.get("state") in {"succeeded", "failed"} or time.monotonic() > deadline:
            return listed
        time.sleep(0.2)


def test_a_joined_batch_is_checked_and_captioned_over_its_whole_file(stack: DevStack) -> None:
    items = [{"key": f"k{i}", "text": text, "speaker": "ryan"} for i, text in enumerate(ITEMS)]
    body = {"items": items, "join": True, "join_gap_ms": 400}
    submitted = call(stack, "POST", "/v1/tts/batch", json=body)
    assert submitted.status_code == 202, submitted.text
    batch_id = submitted.json()["id"]
    listed = manifest(stack, batch_id)
    assert listed["joined"]["state"] == "succeeded", listed

    for item in listed["items"]:
        view = finished(stack, item["job_id"])
        checks = view["verification"]["checks"]
        assert set(checks) == {c.value for c in Check}, checks
        for chunk in view["verification"]["chunks"]:
            assert all(len(a["measures"]) == len(Check) for a in chunk["attempts"])
        assert [t["word"] for t in view["timestamps"]] == item_words(view)

    duration = finished(stack, batch_id)["audio"]["duration_s"]
    captions = call(stack, "GET", f"/v1/jobs/{batch_id}/captions", params={"format": "srt"})
    assert captions.status_code == 200
    cues = list(srt.parse(captions.text))
    assert cues
    times = [t for c in cues for t in (c.start.total_seconds(), c.end.total_seconds())]
    assert times == sorted(times)
    assert times[-1] <= duration + 1e-3
    spoken = words(" ".join(c.content for c in cues))
    assert spoken == words(" ".join(ITEMS))


def item_words(view: dict[str, Any]) -> list[str]:
    return words(" ".join(chunk["text"] for chunk in view["verification"]["chunks"]))


def words(text: str) -> list[str]:
    """The words as the aligner gives them: split at spaces, punctuation dropped."""
    return [w.strip(".,;:!?") for w in text.split()]
