"""The synchronous and streaming doors over fakes: OpenAI's speech route, ``Prefer: wait``,
job streams, and OpenAI's error envelope. A scripted worker moves on each of the API's waits."""

from __future__ import annotations

import base64
import json

import pytest
from flask.testing import FlaskClient

from shared.domain.jobs import JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import ClonePromptRequest, CustomVoiceRequest, VoiceDesignRequest
from shared.usecases.delivery import wait_for
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from tests.support.api import GOOD, checked
from tests.support.backends import heartbeat
from tests.support.gateway import Fakes, add_voice
from tests.support.worker import ScriptedWorker

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))

SPEECH = "/v1/audio/speech"


def speak(client: FlaskClient, headers: dict[str, str], **body: object) -> object:
    payload = {"model": "tts-1", "input": "Hello there.", "voice": "alloy", **body}
    response = client.post(SPEECH, json=payload, headers=headers)
    return checked("POST", SPEECH, response)


def stored_request(fakes: Fakes, job_id: str) -> object:
    job = fakes.jobs.get(job_id)
    assert job is not None
    return job.request


def test_a_speech_call_answers_with_the_audio_of_an_ordinary_job(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    worker = ScriptedWorker(fakes)
    response = speak(client, alice, voice="vivian", response_format="mp3")
    assert response.status_code == 200  # type: ignore[attr-defined]
    job_id = response.headers["X-Job-Id"]  # type: ignore[attr-defined]
    assert response.mimetype == "audio/mpeg"  # type: ignore[attr-defined]
    assert response.data == f"<{job_id}:whole>".encode()  # type: ignore[attr-defined]
    assert response.headers["X-Duration-S"] == "1.25"  # type: ignore[attr-defined]
    assert worker.log == ["claimed", "succeeded"]
    request = stored_request(fakes, job_id)
    assert isinstance(request, CustomVoiceRequest)
    assert (request.speaker, request.format.value, request.stream) == ("Vivian", "mp3", False)
    # The job stays behind like any other.
    view = client.get(f"/v1/jobs/{job_id}", headers=alice)
    assert view.json["state"] == "succeeded"  # type: ignore[index]


def test_openai_voice_names_and_instructions_reach_a_built_in_speaker(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    ScriptedWorker(fakes)
    response = speak(client, alice, voice={"id": "ALLOY"}, instructions="whisper it", speed=1.5)
    request = stored_request(fakes, response.headers["X-Job-Id"])  # type: ignore[attr-defined]
    assert isinstance(request, CustomVoiceRequest)
    assert (request.speaker, request.instruct, request.speed) == ("Serena", "whisper it", 1.5)


def test_a_registered_voice_speaks_its_prompt_and_refuses_instructions(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    ScriptedWorker(fakes)
    voice = add_voice(fakes, name="Narrator", owner="alice", voice_id="v0000000001")
    response = speak(client, alice, voice="narrator")
    request = stored_request(fakes, response.headers["X-Job-Id"])  # type: ignore[attr-defined]
    assert isinstance(request, ClonePromptRequest)
    assert request.voice_id == voice.id

    refused = speak(client, alice, voice="narrator", instructions="angrily")
    assert refused.status_code == 400  # type: ignore[attr-defined]
    error = refused.json["error"]  # type: ignore[attr-defined]
    assert error["param"] == "instructions"
    assert "takes no instructions" in error["message"]


def test_instructions_without_a_voice_design_one(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    ScriptedWorker(fakes)
    response = speak(client, alice, voice=None, instructions="a calm old sailor")
    request = stored_request(fakes, response.headers["X-Job-Id"])  # type: ignore[attr-defined]
    assert isinstance(request, VoiceDesignRequest)
    assert request.instruct == "a calm old sailor"


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"voice": "nobody"}, "voice", "unknown voice 'nobody'"),
        ({"speed": 9}, "speed", "less than or equal to 4"),
        ({"instructions": "x" * 4097}, "instructions", "at most 4096 characters"),
        ({"task_type": "Base"}, "voice", "unknown voice 'alloy'"),
    ],
)
def test_errors_come_in_openais_envelope(
    client: FlaskClient, alice: dict[str, str], body: dict[str, object], param: str, words: str
) -> None:
    response = speak(client, alice, **body)
    assert response.status_code == 400  # type: ignore[attr-defined]
    error = response.json["error"]  # type: ignore[attr-defined]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert words in error["message"]


def test_any_model_name_is_accepted_and_one_that_names_a_type_picks_it(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    """Clients hard-code model names (``tts-1``, a vLLM model id): none is refused, and an id
    ending in a model type (``...-VoiceDesign``) asks for that type."""
    ScriptedWorker(fakes)
    plain = speak(client, alice, model="kokoro")
    assert plain.status_code == 200  # type: ignore[attr-defined]
    designed = speak(
        client,
        alice,
        model="Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign",
        voice=None,
        instructions="a bright young voice",
    )
    request = stored_request(fakes, designed.headers["X-Job-Id"])  # type: ignore[attr-defined]
    assert isinstance(request, VoiceDesignRequest)


@pytest.mark.parametrize(
    ("model", "mode"),
    [
        ("database", "custom_voice"),  # ends in "base", names no type
        ("my-database", "custom_voice"),
        ("qwen3ttsbase", "custom_voice"),
        ("tts-1-hd", "custom_voice"),
        ("Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice", "custom_voice"),
        ("custom_voice", "custom_voice"),  # the tiny models' folder names, as /v1/models lists them
        ("voice-design", "voice_design"),
        ("Qwen3-TTS-12Hz-1.7B-Base-AWQ", None),
        ("base", None),
    ],
)
def test_a_model_names_a_type_by_a_whole_word_not_by_a_suffix(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes, model: str, mode: str | None
) -> None:
    """``voice: alloy`` is an OpenAI voice for every model but a Base one, which clones: there
    it must be a registered voice, and is not (``mode`` None)."""
    ScriptedWorker(fakes)
    design = {"voice": None, "instructions": "a warm voice"} if mode == "voice_design" else {}
    response = speak(client, alice, model=model, **design)
    if mode is None:
        assert response.status_code == 400  # type: ignore[attr-defined]
        assert "unknown voice 'alloy'" in response.json["error"]["message"]  # type: ignore[attr-defined]
        return
    assert response.status_code == 200, response.json  # type: ignore[attr-defined]
    request = stored_request(fakes, response.headers["X-Job-Id"])  # type: ignore[attr-defined]
    assert request.mode == mode  # type: ignore[attr-defined]


def test_a_bad_key_is_openais_authentication_error(client: FlaskClient) -> None:
    response = speak(client, {"Authorization": "Bearer nope"})
    assert response.status_code == 401  # type: ignore[attr-defined]
    assert response.json["error"]["type"] == "authentication_error"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "body",
    [{}, {"stream_format": "audio"}, {"stream_format": "sse"}, {"stream": True}],
    ids=["whole", "audio", "sse", "stream"],
)
def test_a_wait_past_its_bound_is_a_504_naming_the_job_which_runs_on(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes, body: dict[str, object]
) -> None:
    """An OpenAI client never gets a 2xx that is not audio (its SDK would save a job's JSON as
    ``speech.mp3``): past the wait it gets an error naming the job, and no retry."""
    worker = ScriptedWorker(fakes, idle_steps=10_000)
    response = speak(client, alice, response_format="pcm", **body)
    assert response.status_code == 504  # type: ignore[attr-defined]
    assert response.mimetype == "application/json"  # type: ignore[attr-defined]
    [job] = fakes.jobs.all()
    error = response.json["error"]  # type: ignore[attr-defined]
    assert (error["type"], error["code"]) == ("server_error", "still_running")
    assert f"job {job.id} has not finished within 120 s" in error["message"]
    assert f"/v1/jobs/{job.id}/audio" in error["message"]
    assert response.headers["X-Job-Id"] == job.id  # type: ignore[attr-defined]
    assert response.headers["X-Should-Retry"] == "false"  # type: ignore[attr-defined]
    assert job.state is JobState.QUEUED
    assert fakes.publisher.messages  # routed: a worker that comes back finds it
    worker.idle_steps = 0
    ScriptedWorker(fakes)
    fetched = client.get(f"/v1/jobs/{job.id}/stream", headers=alice)
    assert fetched.status_code == 200
    assert fetched.data.startswith(f"<{job.id}:".encode())


@pytest.mark.parametrize("stream_format", ["audio", None])
def test_flac_with_a_stream_format_is_sent_whole(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes, stream_format: str | None
) -> None:
    """OpenAI's default ``stream_format`` is ``audio``: FLAC, which cannot be streamed, comes
    whole once made instead of being refused."""
    ScriptedWorker(fakes)
    body = {"stream": True} if stream_format is None else {"stream_format": stream_format}
    response = speak(client, alice, response_format="flac", **body)
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert response.mimetype == "audio/flac"  # type: ignore[attr-defined]
    job_id = response.headers["X-Job-Id"]  # type: ignore[attr-defined]
    assert response.data == f"<{job_id}:whole>".encode()  # type: ignore[attr-defined]
    request = stored_request(fakes, job_id)
    assert isinstance(request, CustomVoiceRequest)
    assert not request.stream


def test_flac_as_sse_is_one_delta_with_the_whole_audio(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    ScriptedWorker(fakes)
    response = speak(client, alice, response_format="flac", stream_format="sse")
    assert response.mimetype == "text/event-stream"  # type: ignore[attr-defined]
    job_id = response.headers["X-Job-Id"]  # type: ignore[attr-defined]
    events = sse_events(response.data)  # type: ignore[attr-defined]
    assert [e["type"] for _, e in events] == ["speech.audio.delta", "speech.audio.done"]
    assert base64.b64decode(str(events[0][1]["audio"])) == f"<{job_id}:whole>".encode()


@pytest.mark.parametrize(
    ("body", "streamed"),
    [
        ({"stream": True}, True),
        ({"stream": False}, False),
        ({"stream": False, "stream_format": "audio"}, False),
        ({"stream": True, "stream_format": "audio"}, True),
        ({"stream_format": "audio"}, True),
        ({}, False),
    ],
)
def test_vllms_stream_flag_streams_the_audio_or_sends_it_whole(
    client: FlaskClient,
    alice: dict[str, str],
    fakes: Fakes,
    body: dict[str, object],
    streamed: bool,
) -> None:
    ScriptedWorker(fakes, pieces=2)
    response = speak(client, alice, response_format="pcm", **body)
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert response.mimetype == "audio/pcm"  # type: ignore[attr-defined]
    job_id = response.headers["X-Job-Id"]  # type: ignore[attr-defined]
    request = stored_request(fakes, job_id)
    assert isinstance(request, CustomVoiceRequest)
    assert request.stream is streamed
    whole = f"<{job_id}:0><{job_id}:1>" if streamed else f"<{job_id}:whole>"
    assert response.data == whole.encode()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("instructions", "stored"), [("", None), ("   ", None), ("x" * 4096, "x" * 4096)]
)
def test_instructions_up_to_openais_limit_and_empty_ones_are_absent(
    client: FlaskClient,
    alice: dict[str, str],
    fakes: Fakes,
    instructions: str,
    stored: str | None,
) -> None:
    ScriptedWorker(fakes)
    response = speak(client, alice, instructions=instructions)
    assert response.status_code == 200  # type: ignore[attr-defined]
    request = stored_request(fakes, response.headers["X-Job-Id"])  # type: ignore[attr-defined]
    assert isinstance(request, CustomVoiceRequest)
    assert request.instruct == stored
    # Empty with a cloned voice is absent too, not "instructions given to the Base model".
    add_voice(fakes, name="Narrator", owner="alice", voice_id="v0000000001")
    if stored is None:
        cloned = speak(client, alice, voice="narrator", instructions=instructions)
        assert cloned.status_code == 200  # type: ignore[attr-defined]


def test_a_failed_job_is_a_502_naming_the_jobs_error(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    ScriptedWorker(fakes, fail_with="synthesis_runaway")
    response = speak(client, alice)
    assert response.status_code == 502  # type: ignore[attr-defined]
    error = response.json["error"]  # type: ignore[attr-defined]
    assert (error["type"], error["code"]) == ("server_error", "job_failed")
    assert "synthesis_runaway" in error["message"]


def test_an_audio_stream_sends_its_first_piece_while_the_job_still_runs(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    worker = ScriptedWorker(fakes, pieces=3)
    payload = {"model": "tts-1", "input": "One. Two. Three.", "voice": "ryan"}
    response = client.post(
        SPEECH, json={**payload, "stream_format": "audio", "response_format": "pcm"},
        headers=alice, buffered=False,
    )  # fmt: skip
    assert response.status_code == 200
    job_id = response.headers["X-Job-Id"]
    chunks = response.response  # the app's own iterator: read one chunk at a time
    first = next(iter(chunks))
    # By event order: the first piece is in hand, and the job has not finished.
    assert first == f"<{job_id}:0>".encode()
    assert worker.log == ["claimed", "piece 0"]
    assert fakes.jobs.get(job_id).state is JobState.RUNNING  # type: ignore[union-attr]
    rest = b"".join(chunks)
    assert first + rest == b"".join(f"<{job_id}:{i}>".encode() for i in range(3))
    assert worker.log[-1] == "succeeded"
    request = stored_request(fakes, job_id)
    assert isinstance(request, CustomVoiceRequest)
    assert request.stream


def sse_events(body: bytes) -> list[tuple[str | None, dict[str, object]]]:
    events = []
    for block in body.decode().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("id"), json.loads(fields["data"])))
    return events


def test_sse_sends_deltas_then_done_and_resumes_after_the_last_event_id(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    ScriptedWorker(fakes, pieces=3)
    response = speak(client, alice, stream_format="sse", response_format="mp3")
    assert response.mimetype == "text/event-stream"  # type: ignore[attr-defined]
    job_id = response.headers["X-Job-Id"]  # type: ignore[attr-defined]
    events = sse_events(response.data)  # type: ignore[attr-defined]
    assert [(i, e["type"]) for i, e in events] == [
        ("0", "speech.audio.delta"),
        ("1", "speech.audio.delta"),
        ("2", "speech.audio.delta"),
        (None, "speech.audio.done"),
    ]
    pieces = [base64.b64decode(str(e["audio"])) for _, e in events[:3]]
    assert pieces == [f"<{job_id}:{i}>".encode() for i in range(3)]
    done = events[-1][1]
    assert done["job_id"] == job_id
    assert done["usage"]["input_tokens"] == len("Hello there.")  # type: ignore[index]

    resumed = client.get(
        f"/v1/jobs/{job_id}/stream?stream_format=sse",
        headers={**alice, "Last-Event-ID": "0"},
    )
    ids = [i for i, _ in sse_events(resumed.data)]
    assert ids == ["1", "2", None]
    by_offset = client.get(f"/v1/jobs/{job_id}/stream?offset=2", headers=alice)
    assert by_offset.data == f"<{job_id}:2>".encode()


def test_a_job_that_was_not_streamed_streams_whole_once_done(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    ScriptedWorker(fakes)
    job_id = client.post("/v1/tts/jobs", json=GOOD, headers=alice).json["id"]  # type: ignore[index]
    response = client.get(f"/v1/jobs/{job_id}/stream", headers=alice)
    assert response.status_code == 200
    assert response.data == f"<{job_id}:whole>".encode()


def test_prefer_wait_answers_with_the_finished_job_or_202(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    worker = ScriptedWorker(fakes)
    headers = {**alice, "Prefer": "wait=30"}
    done = checked("POST", "/v1/tts/jobs", client.post("/v1/tts/jobs", json=GOOD, headers=headers))
    assert done.status_code == 200
    assert done.json["state"] == "succeeded"  # type: ignore[index]
    assert done.headers["Preference-Applied"] == "wait=30"

    worker.idle_steps = 10_000
    late = checked("POST", "/v1/tts/jobs", client.post("/v1/tts/jobs", json=GOOD, headers=headers))
    assert late.status_code == 202
    assert late.json["state"] == "queued"  # type: ignore[index]


def test_models_lists_what_backends_that_are_up_can_serve(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    empty = checked("GET", "/v1/models", client.get("/v1/models", headers=alice))
    assert empty.json == {"object": "list", "data": []}
    local = ("/srv/.cache/tiny-model/base", "C:\\models\\vd\\")
    fakes.backends.heartbeat(heartbeat(models=("Qwen/CV", *local)))
    listed = checked("GET", "/v1/models", client.get("/v1/models", headers=alice))
    ids = [m["id"] for m in listed.json["data"]]  # type: ignore[index]
    assert ids[:3] == ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"]
    # A Hugging Face id as it is; a local directory by its folder's name, never its path.
    assert ids[4:] == ["Qwen/CV", "base", "vd"]
    ScriptedWorker(fakes)
    assert speak(client, alice, model="Qwen/CV").status_code == 200  # type: ignore[attr-defined]


def test_a_wrong_method_says_which_ones_are_allowed(
    client: FlaskClient, alice: dict[str, str]
) -> None:
    response = client.get(SPEECH, headers=alice)
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"].split(", ")


def test_a_wait_polls_quickly_again_once_the_job_starts_running(
    gateway: Gateway, fakes: Fakes
) -> None:
    """Eased off while the job queued, the wait starts short again when it runs, so the audio
    is seen soon after it exists rather than up to ``poll_max_s`` later."""
    slept: list[float] = []
    last = [fakes.clock()]

    def record() -> None:
        slept.append((fakes.clock() - last[0]).total_seconds())
        last[0] = fakes.clock()

    fakes.clock.on_sleep.append(record)
    # Queued for six polls, then running for three (one streamed piece a step).
    worker = ScriptedWorker(fakes, idle_steps=6, pieces=3)
    request = CustomVoiceRequest(text="Hi.", speaker="ryan", stream=True, format="pcm")
    job = submit_job(gateway, principal=ALICE, request=request)
    done = wait_for(gateway, job, timeout_s=60)

    assert done.state is JobState.SUCCEEDED
    assert worker.log[:2] == ["claimed", "piece 0"]  # at the seventh poll
    assert slept[:7] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]  # eased off while it queued
    assert slept[7] == gateway.settings.api.poll_initial_s  # short again once it runs
