"""Every stream ends: a job answered from the cache, a resume point that is not a piece's index,
a job that failed or was canceled, a piece that is gone. Over fakes, with a budget of reads and
sleeps, so a stream that would poll forever fails its test instead of hanging it."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from shared.domain.errors import InvalidRequest, NotFound, StillRunning, StreamRestarted
from shared.domain.jobs import Job, JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.usecases.cache import remember
from shared.usecases.delivery import Piece, pieces, wait_for
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from tests.support.api import checked
from tests.support.contracts import validate_schema
from tests.support.gateway import Fakes
from tests.support.worker import ScriptedWorker

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))
SPEECH = "/v1/audio/speech"
EVENT = "openapi.yaml#/components/schemas/SpeechStreamEvent"
BUDGET = 200
"""Reads and sleeps one test may make: far more than any of these streams needs."""


@pytest.fixture(autouse=True)
def budget(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Job reads, object reads and sleeps each raise once past ``BUDGET``: a stream that spins
    (reading without sleeping) or waits without end fails rather than hangs."""

    def bounded(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        calls = [0]

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] > BUDGET:
                raise AssertionError(f"more than {BUDGET} {name}: a stream that never ends")
            return call(*args, **kwargs)

        return counted

    monkeypatch.setattr(fakes.jobs, "get", bounded("job reads", fakes.jobs.get))
    monkeypatch.setattr(fakes.blobs, "get", bounded("object reads", fakes.blobs.get))
    fakes.clock.on_sleep.append(bounded("sleeps", lambda: None))


def streamed_job(gateway: Gateway, fakes: Fakes, *, seed: int | None = 7) -> Job:
    """A seeded streamed job run to the end in three pieces, and remembered in the cache as
    the real completion path does."""
    ScriptedWorker(fakes, pieces=3)
    request = CustomVoiceRequest(text="One. Two. Three.", speaker="ryan", stream=True,
                                 format="pcm", seed=seed)  # fmt: skip
    job = wait_for(gateway, submit_job(gateway, principal=ALICE, request=request), timeout_s=60)
    assert job.state is JobState.SUCCEEDED
    remember(gateway, job)
    return job


def whole(job_id: str) -> bytes:
    """The scripted worker's audio of a streamed job: its three pieces, joined."""
    return b"".join(f"<{job_id}:{i}>".encode() for i in range(3))


def sse_events(body: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    """The stream's events, each checked against the contract's ``SpeechStreamEvent``."""
    events = []
    for block in body.decode().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        data = json.loads(fields["data"])
        validate_schema(EVENT, data)
        events.append((fields.get("id"), data))
    return events


# -- a job answered from the cache ---------------------------------------------------------


def test_pieces_of_a_job_answered_from_the_cache_are_its_sources_whole_audio(
    gateway: Gateway, fakes: Fakes
) -> None:
    source = streamed_job(gateway, fakes)
    request = CustomVoiceRequest(text="One. Two. Three.", speaker="ryan", stream=True,
                                 format="pcm", seed=7)  # fmt: skip
    hit = submit_job(gateway, principal=ALICE, request=request)
    assert (hit.state, hit.cached_from) == (JobState.SUCCEEDED, source.id)
    assert hit.result is not None
    assert hit.result.parts == 3  # the source's, copied

    assert list(pieces(gateway, hit, idle_s=5)) == [Piece(0, whole(source.id))]
    assert list(pieces(gateway, hit, start=1, idle_s=5)) == []  # resumed past its one piece


@pytest.mark.parametrize("kind", ["audio", "sse"])
def test_a_repeated_seeded_speech_stream_serves_the_cached_audio(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes, kind: str
) -> None:
    ScriptedWorker(fakes, pieces=3)
    body = {"model": "tts-1", "input": "One. Two.", "voice": "ryan", "seed": 7,
            "response_format": "pcm", "stream_format": kind}  # fmt: skip
    first = checked("POST", SPEECH, client.post(SPEECH, json=body, headers=alice))
    source_id = first.headers["X-Job-Id"]
    assert first.status_code == 200
    first.get_data()  # read to its end, as a client does
    source = fakes.jobs.get(source_id)
    assert source is not None
    assert source.state is JobState.SUCCEEDED
    remember(gateway, source)

    again = checked("POST", SPEECH, client.post(SPEECH, json=body, headers=alice))
    assert again.status_code == 200
    hit = fakes.jobs.get(again.headers["X-Job-Id"])
    assert hit is not None
    assert hit.cached_from == source_id
    if kind == "audio":
        assert again.data == whole(source_id)
    else:
        events = sse_events(again.data)
        assert [(i, e["type"]) for i, e in events] == [
            ("0", "speech.audio.delta"),
            (None, "speech.audio.done"),
        ]
        assert base64.b64decode(events[0][1]["audio"]) == whole(source_id)


# -- where a stream starts -----------------------------------------------------------------


def test_pieces_refuse_a_negative_start(gateway: Gateway, fakes: Fakes) -> None:
    job = streamed_job(gateway, fakes)
    with pytest.raises(InvalidRequest):
        next(pieces(gateway, job, start=-1, idle_s=5))


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("stream_format=sse", {"Last-Event-ID": "-5"}),
        ("stream_format=sse", {"Last-Event-ID": "abc"}),
        ("stream_format=sse", {"Last-Event-ID": " 1"}),
        ("stream_format=sse", {"Last-Event-ID": "1_0"}),
        ("stream_format=sse", {"Last-Event-ID": "9" * 5000}),
        ("offset=-1", {}),
        ("offset=+1", {}),
        ("offset=x", {}),
        ("stream_format=sse&offset=-3", {}),
    ],
)
def test_a_resume_point_that_is_not_a_pieces_index_is_a_400(
    client: FlaskClient,
    alice: dict[str, str],
    gateway: Gateway,
    fakes: Fakes,
    query: str,
    headers: dict[str, str],
) -> None:
    job = streamed_job(gateway, fakes)
    path = f"/v1/jobs/{job.id}/stream"
    response = checked("GET", path, client.get(f"{path}?{query}", headers={**alice, **headers}))
    assert response.status_code == 400
    error = response.json["error"]  # type: ignore[index]
    assert error["code"] == "invalid_resume_point"
    assert error["field"] in {"offset", "Last-Event-ID"}


def test_a_stream_resumed_at_or_past_its_end_is_empty(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    job = streamed_job(gateway, fakes)
    path = f"/v1/jobs/{job.id}/stream"
    for offset in ("3", "999999999"):
        response = checked("GET", path, client.get(f"{path}?offset={offset}", headers=alice))
        assert (response.status_code, response.data) == (200, b"")


# -- a job that failed or was canceled -----------------------------------------------------


def canceled_job(client: FlaskClient, alice: dict[str, str], fakes: Fakes) -> str:
    ScriptedWorker(fakes, idle_steps=10_000)  # nobody runs it: canceled while queued
    body = {"text": "Hello there.", "speaker": "Vivian", "stream": True, "format": "pcm"}
    job_id = str(client.post("/v1/tts/jobs", json=body, headers=alice).json["id"])  # type: ignore[index]
    canceled = client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)
    assert canceled.json["state"] == "canceled"  # type: ignore[index]
    return job_id


def test_an_audio_stream_of_a_canceled_job_is_a_409(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    job_id = canceled_job(client, alice, fakes)
    path = f"/v1/jobs/{job_id}/stream"
    response = checked("GET", path, client.get(path, headers=alice))
    assert response.status_code == 409
    error = response.json["error"]  # type: ignore[index]
    assert (error["code"], error["job_id"], error["job_error"]) == (
        "job_canceled",
        job_id,
        "canceled",
    )


def test_an_sse_stream_of_a_canceled_job_is_an_error_event(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    job_id = canceled_job(client, alice, fakes)
    path = f"/v1/jobs/{job_id}/stream"
    response = checked("GET", path, client.get(f"{path}?stream_format=sse", headers=alice))
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    [(event_id, event)] = sse_events(response.data)
    assert event_id is None
    assert event["type"] == "error"
    assert (event["error"]["code"], event["error"]["job_id"]) == ("job_canceled", job_id)


def test_a_speech_stream_of_a_job_that_fails_is_a_409_or_an_error_event(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    ScriptedWorker(fakes, fail_with="synthesis_runaway")
    body = {"model": "tts-1", "input": "Hello.", "voice": "ryan", "response_format": "pcm"}

    audio = client.post(SPEECH, json={**body, "stream_format": "audio"}, headers=alice)
    assert checked("POST", SPEECH, audio).status_code == 409
    error = audio.json["error"]  # type: ignore[index]
    assert (error["type"], error["code"]) == ("conflict_error", "job_failed")
    assert "synthesis_runaway" in error["message"]

    sse = client.post(SPEECH, json={**body, "stream_format": "sse"}, headers=alice)
    assert checked("POST", SPEECH, sse).status_code == 200
    [(_, event)] = sse_events(sse.data)
    assert event["error"]["code"] == "job_failed"
    assert event["error"]["job_error"] == "synthesis_runaway"


def test_an_audio_stream_canceled_after_it_started_just_ends(
    client: FlaskClient,
    alice: dict[str, str],
    fakes: Fakes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ScriptedWorker(fakes, pieces=3)
    body = {"model": "tts-1", "input": "One. Two. Three.", "voice": "ryan",
            "response_format": "pcm", "stream_format": "audio"}  # fmt: skip
    response = client.post(SPEECH, json=body, headers=alice, buffered=False)
    assert response.status_code == 200
    job_id = response.headers["X-Job-Id"]
    chunks: Iterator[bytes] = iter(response.response)  # type: ignore[arg-type]
    assert next(chunks) == f"<{job_id}:0>".encode()
    client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)
    with caplog.at_level(logging.WARNING):
        assert b"".join(chunks) == b""  # the status went out: the body is short, no more
    assert "audio stream ended early" in caplog.text


# -- polling ends ----------------------------------------------------------------------------


def test_pieces_of_a_job_nobody_runs_give_up_after_idle_s(gateway: Gateway, fakes: Fakes) -> None:
    ScriptedWorker(fakes, idle_steps=10_000)
    request = CustomVoiceRequest(text="Hi.", speaker="ryan", stream=True, format="pcm")
    job = submit_job(gateway, principal=ALICE, request=request)
    started = fakes.clock()
    with pytest.raises(StillRunning):
        next(pieces(gateway, job, idle_s=3))
    assert (fakes.clock() - started).total_seconds() == pytest.approx(3)


def test_a_piece_of_a_finished_job_that_is_gone_ends_the_stream(
    gateway: Gateway, fakes: Fakes
) -> None:
    job = streamed_job(gateway, fakes, seed=None)
    # Found by its bytes, whatever the naming of part objects: the bucket's lifecycle took it.
    [gone] = [path for path, (data, _) in fakes.blobs.objects.items()
              if data == f"<{job.id}:1>".encode()]  # fmt: skip
    assert fakes.blobs.delete(gone)
    stream = pieces(gateway, job, idle_s=5)
    assert next(stream) == Piece(0, f"<{job.id}:0>".encode())
    with pytest.raises(NotFound):
        next(stream)


def test_a_stream_whose_run_lost_its_claim_ends_rather_than_mixing_two_attempts(
    gateway: Gateway, fakes: Fakes
) -> None:
    # The run that made piece 0 lost its lease; attempt 2 makes the audio anew. Its pieces are
    # stored under attempt 2 and the stream, having sent attempt 1's first piece, stops there.
    request = CustomVoiceRequest(text="One. Two.", speaker="ryan", stream=True, format="pcm")
    job = submit_job(gateway, principal=ALICE, request=request)
    now = fakes.clock()
    first = fakes.jobs.update(
        job.id, lambda j: j.claim("w1", backend=j.backend, now=now, lease_s=5)
    )
    fakes.blobs.put(f"audio/{job.id}/1/part-00000.pcm", b"attempt-1", content_type="audio/pcm")
    stream = pieces(gateway, first, idle_s=60)
    assert next(stream) == Piece(0, b"attempt-1")
    fakes.clock.advance(10)
    later = fakes.clock()
    fakes.jobs.update(job.id, lambda j: j.claim("w2", backend=j.backend, now=later, lease_s=5))
    fakes.blobs.put(f"audio/{job.id}/2/part-00001.pcm", b"attempt-2", content_type="audio/pcm")
    with pytest.raises(StreamRestarted, match="started again"):
        next(stream)
