"""The unmodified ``openai`` package against the local stack (functions-framework, emulators,
the worker process, the tiny models): every format decoded, built-in / OpenAI / registered
voices, streaming through ``with_streaming_response``, and typed errors carrying our message."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import av
import numpy as np
import openai
import pytest
import requests
import soundfile as sf

from infra.devstack import DevStack

pytestmark = pytest.mark.e2e

TEXT = "Hello there. This is a test."


@pytest.fixture(scope="module")
def client(stack: DevStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=stack.api_key, max_retries=0)


def decoded_seconds(data: bytes, fmt: str) -> float:
    """How much audio the bytes hold, read back by a real decoder (FFmpeg through PyAV)."""
    if fmt == "pcm":
        samples = np.frombuffer(data, dtype="<i2")
        return len(samples) / 24_000
    with av.open(io.BytesIO(data)) as container:
        frames = sum(f.samples for f in container.decode(audio=0))
        rate = container.streams.audio[0].rate
    return float(frames) / rate


@pytest.mark.parametrize("fmt", ["wav", "mp3", "opus", "flac", "aac", "pcm"])
def test_every_format_comes_back_as_audio_a_decoder_reads(client: openai.OpenAI, fmt: Any) -> None:
    response = client.audio.speech.create(
        model="tts-1", voice="vivian", input=TEXT, response_format=fmt
    )
    data = response.read()
    assert response.response.headers["X-Job-Id"]
    duration = float(response.response.headers["X-Duration-S"])
    assert duration > 0
    # Lossy codecs pad a frame or two; pcm and wav are exact.
    assert decoded_seconds(data, fmt) == pytest.approx(duration, abs=0.1)


def test_an_openai_voice_name_and_speed_reach_a_built_in_speaker(client: openai.OpenAI) -> None:
    normal = client.audio.speech.create(
        model="gpt-4o-mini-tts",
        voice="alloy",
        input=TEXT,
        response_format="wav",
        extra_body={"seed": 7},
    )
    faster = client.audio.speech.create(
        model="gpt-4o-mini-tts",
        voice="alloy",
        input=TEXT,
        response_format="wav",
        speed=2.0,
        extra_body={"seed": 7},
    )
    slow_s = sf.info(io.BytesIO(normal.read())).duration
    fast_s = sf.info(io.BytesIO(faster.read())).duration
    assert fast_s == pytest.approx(slow_s / 2, rel=0.05)


def test_a_registered_voice_speaks_by_name(stack: DevStack, client: openai.OpenAI) -> None:
    clip = io.BytesIO()
    t = np.arange(48_000, dtype=np.float32) / 24_000
    sf.write(clip, 0.3 * np.sin(2 * np.pi * 180 * t), 24_000, format="WAV")
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    created = requests.post(
        f"{stack.base_url}/v1/voices",
        json={
            "name": "SDK Narrator",
            "ref_audio": base64.b64encode(clip.getvalue()).decode(),
            "ref_text": "A line.",
        },
        headers=headers,
        timeout=90,
    )
    job_id = created.json()["id"]
    deadline = time.monotonic() + 90
    while requests.get(f"{stack.base_url}/v1/jobs/{job_id}", headers=headers, timeout=30).json()[
        "state"
    ] not in {"succeeded", "failed"}:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    response = client.audio.speech.create(
        model="qwen3-tts", voice="sdk narrator", input=TEXT, response_format="flac"
    )
    assert decoded_seconds(response.read(), "flac") > 0
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.speech.create(
            model="qwen3-tts", voice="sdk narrator", input=TEXT, instructions="shout"
        )
    assert "takes no instructions" in refused.value.message


def test_an_unknown_voice_is_the_sdks_typed_error_with_our_message(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.audio.speech.create(model="tts-1", voice="nobody-at-all", input=TEXT)
    error = raised.value
    assert error.status_code == 400
    assert "unknown voice 'nobody-at-all'" in error.message
    assert isinstance(error.body, dict)
    assert error.body["param"] == "voice"


def test_a_bad_key_is_the_sdks_authentication_error(stack: DevStack) -> None:
    stranger = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="tts_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)


def test_streamed_audio_is_the_jobs_audio_piece_by_piece(
    stack: DevStack, client: openai.OpenAI
) -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(12))
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="ryan", input=text, response_format="pcm", stream_format="audio"
    ) as response:
        job_id = response.headers["X-Job-Id"]
        chunks = list(response.iter_bytes())
    streamed = b"".join(chunks)
    view = requests.get(
        f"{stack.base_url}/v1/jobs/{job_id}",
        headers={"Authorization": f"Bearer {stack.api_key}"},
        timeout=30,
    ).json()
    assert view["state"] == "succeeded"
    assert view["audio"]["parts"] > 1  # one piece per sentence group, not one at the end
    whole = requests.get(
        f"{stack.base_url}/v1/jobs/{job_id}/audio",
        headers={"Authorization": f"Bearer {stack.api_key}"},
        timeout=30,
    ).content
    # The pieces, end to end, hold the finished audio's samples (two encoders may round a
    # sample to 16 bits differently: one step at most).
    streamed_samples = np.frombuffer(streamed, dtype="<i2").astype(np.int32)
    whole_samples = np.frombuffer(whole, dtype="<i2").astype(np.int32)
    assert len(streamed_samples) == len(whole_samples)
    assert np.abs(streamed_samples - whole_samples).max() <= 1


def test_sse_events_carry_the_audio_in_openais_shape(client: openai.OpenAI) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="ryan", input=TEXT, response_format="mp3", stream_format="sse"
    ) as response:
        body = response.read().decode()
    events = [
        json.loads(line.removeprefix("data: "))
        for line in body.splitlines()
        if line.startswith("data: ")
    ]
    assert events[-1]["type"] == "speech.audio.done"
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert deltas
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert decoded_seconds(audio, "mp3") == pytest.approx(events[-1]["duration_s"], abs=0.15)
