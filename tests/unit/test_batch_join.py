"""A batch's joined file over fakes: the items run on a worker that stores real audio, the join
job runs through the real task executor, which reads each item back, joins and encodes."""

from __future__ import annotations

import numpy as np
import pytest
from flask.testing import FlaskClient

from gpu_worker.audio.encoding import Waveform, decode_output, encode
from gpu_worker.bucket_io import BucketIO
from gpu_worker.prompt_cache import PromptCache
from gpu_worker.runner import JobRunner, RunnerConfig
from gpu_worker.synthesizer import ModelSet
from gpu_worker.tasks import Task, TaskExecutor
from shared.domain.audio_formats import SAMPLE_RATE, AudioFormat
from shared.domain.errors import SynthesisFailed
from shared.domain.jobs import JobOutput, JobState
from shared.domain.synthesis import JoinRequest, SpeechFields
from shared.usecases.gateway import Gateway
from shared.usecases.joining import start_join
from shared.wire.messages import JobMessage
from tests.support.api import checked
from tests.support.gateway import Fakes

SECONDS = {"One.": 0.5, "Two.": 0.75, "Three.": 1.0}


class Items:
    """Speaks each item as a tone of its text's length, for real, and hands joins to the real
    executor; ``failing`` texts fail."""

    def __init__(self, gateway: Gateway) -> None:
        io = BucketIO(gateway=gateway, prompts=PromptCache(max_bytes=0, max_file_bytes=1 << 20))
        self.io = io
        self.real = TaskExecutor(
            models=ModelSet([]),
            io=io,
            limits=gateway.settings.voices,
            max_chunk_chars=300,
            max_join_s=gateway.settings.worker.max_join_s,
        )
        self.failing: set[str] = set()
        self.joins = 0

    def execute(self, task: Task) -> JobOutput:
        request = task.request
        if isinstance(request, JoinRequest):
            self.joins += 1
            return self.real.execute(task)
        assert isinstance(request, SpeechFields)
        if request.text in self.failing:
            raise SynthesisFailed("scripted failure")
        n = round(SECONDS[request.text] * SAMPLE_RATE)
        tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / SAMPLE_RATE)
        wave = Waveform(samples=tone.astype(np.float32), sample_rate=SAMPLE_RATE)
        return JobOutput(audio=self.io.store_audio(task, encode(wave, fmt=request.format), parts=0))


def drain(gateway: Gateway, fakes: Fakes, executor: Items) -> None:
    """Run every queued job, and those their endings queue, until none is left."""
    config = RunnerConfig(worker_id="w1", backend_id="home-4090", lease_s=60)
    runner = JobRunner(gateway=gateway, executor=executor, config=config)
    while queued := [j for j in fakes.jobs.find(state=JobState.QUEUED, limit=100) if j.backend]:
        for job in queued:
            runner.run(JobMessage(job_id=job.id))


def submit(client: FlaskClient, alice: dict[str, str], **body: object) -> str:
    items = [
        {"key": f"k{i}", "text": text, "speaker": "ryan", "format": "mp3"}
        for i, text in enumerate(SECONDS)
    ]
    response = checked(
        "POST",
        "/v1/tts/batch",
        client.post("/v1/tts/batch", json={"items": items, **body}, headers=alice),
    )
    assert response.status_code == 202, response.json
    return str(response.json["id"])  # type: ignore[index]


def test_a_joined_batch_ends_with_one_file_of_every_item_in_order(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    executor = Items(gateway)
    batch_id = submit(client, alice, join=True, join_gap_ms=250)
    drain(gateway, fakes, executor)

    batch = fakes.jobs.get(batch_id)
    assert batch is not None
    assert batch.state is JobState.SUCCEEDED
    assert batch.result is not None
    assert batch.result.uri == f"gs://test-bucket/audio/{batch_id}j/1.mp3"
    joined = decode_output(
        fakes.blobs.get(f"audio/{batch_id}j/1.mp3"), fmt=AudioFormat.MP3, max_duration_s=60
    )
    expected_s = sum(SECONDS.values()) + 2 * 0.25
    # MP3 adds its encoder's priming and padding, at most about two frames per file.
    assert joined.duration_s == pytest.approx(expected_s, abs=0.15)
    assert batch.result.duration_s == pytest.approx(expected_s, abs=0.01)
    # Where each item starts in the file, for its captions: after the items and gaps before it.
    seconds = list(SECONDS.values())
    expected_starts = [0.0, seconds[0] + 0.25, seconds[0] + seconds[1] + 0.5]
    assert batch.result.starts_s == pytest.approx(expected_starts, abs=0.1)

    path = f"/v1/jobs/{batch_id}/manifest"
    listed = checked("GET", path, client.get(path, headers=alice)).json
    assert listed["joined"]["job_id"] == f"{batch_id}j"  # type: ignore[index]
    assert listed["joined"]["state"] == "succeeded"  # type: ignore[index]
    assert [i["key"] for i in listed["items"]] == ["k0", "k1", "k2"]  # type: ignore[index]
    audio = client.get(f"/v1/jobs/{batch_id}/audio", headers=alice)
    assert audio.status_code == 302  # the batch's own audio is the joined file
    assert f"audio/{batch_id}j/1.mp3" in audio.headers["Location"]
    assert executor.joins == 1


def test_a_failed_item_fails_the_batch_without_a_join_until_it_is_retried(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    executor = Items(gateway)
    executor.failing = {"Two."}
    batch_id = submit(client, alice, join=True)
    drain(gateway, fakes, executor)

    failed = fakes.jobs.get(batch_id)
    assert failed is not None
    assert failed.state is JobState.FAILED
    assert failed.error is not None
    assert failed.error.code == "children_failed"
    assert fakes.jobs.get(f"{batch_id}j") is None  # nothing to join

    executor.failing.clear()
    path = f"/v1/jobs/{batch_id}i1/retry"
    assert checked("POST", path, client.post(path, headers=alice)).status_code == 202
    drain(gateway, fakes, executor)
    done = fakes.jobs.get(batch_id)
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    assert executor.joins == 1


def test_a_join_that_fails_fails_the_batch_and_can_be_retried(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    executor = Items(gateway)
    batch_id = submit(client, alice, join=True)
    real = executor.real
    executor.real = TaskExecutor(  # joins nothing longer than a second
        models=ModelSet([]),
        io=executor.io,
        limits=gateway.settings.voices,
        max_chunk_chars=300,
        max_join_s=1.0,
    )
    drain(gateway, fakes, executor)
    batch = fakes.jobs.get(batch_id)
    assert batch is not None
    assert batch.state is JobState.FAILED
    assert batch.error is not None
    assert batch.error.code == "join_failed"

    executor.real = real
    path = f"/v1/jobs/{batch_id}j/retry"
    assert checked("POST", path, client.post(path, headers=alice)).status_code == 202
    drain(gateway, fakes, executor)
    again = fakes.jobs.get(batch_id)
    assert again is not None
    assert again.state is JobState.SUCCEEDED


def test_starting_a_join_twice_makes_one_job(
    client: FlaskClient, alice: dict[str, str], gateway: Gateway, fakes: Fakes
) -> None:
    executor = Items(gateway)
    batch_id = submit(client, alice, join=True)
    config = RunnerConfig(worker_id="w1", backend_id="home-4090", lease_s=60)
    runner = JobRunner(gateway=gateway, executor=executor, config=config)
    for index in range(3):
        runner.run(JobMessage(job_id=f"{batch_id}i{index}"))
    parent = fakes.jobs.get(batch_id)
    assert parent is not None
    # As two finishers racing would see them: every item done, no join job yet.
    children = fakes.jobs.get_many(parent.request.children)  # type: ignore[union-attr]
    first, second = start_join(gateway, parent, children), start_join(gateway, parent, children)
    assert first is not None
    assert first == second
    published = [m for m in fakes.publisher.messages if m.attributes.get("mode") == "join"]
    assert len(published) == 1


def test_a_joined_batch_needs_one_format(client: FlaskClient, alice: dict[str, str]) -> None:
    items = [
        {"text": "One.", "speaker": "ryan", "format": "mp3"},
        {"text": "Two.", "speaker": "ryan", "format": "wav"},
    ]
    response = client.post("/v1/tts/batch", json={"items": items, "join": True}, headers=alice)
    assert response.status_code == 422
    assert "one format" in response.json["error"]["message"]  # type: ignore[index]


def test_a_joined_batch_sure_to_outlast_the_join_limit_is_refused_before_any_item_runs(
    fakes: Fakes,
) -> None:
    from functions.api.app import create_api
    from shared.settings import Settings
    from tests.support.gateway import fake_gateway, issue_key

    settings = Settings.model_validate({"bucket": "test-bucket", "worker": {"max_join_s": 60}})
    gateway = fake_gateway(settings, fakes)
    client = create_api(gateway).test_client()
    headers = issue_key(gateway, "alice")
    # 4 x 500 characters: at least 67 s of speech however fast a voice speaks.
    items = [{"text": "word " * 100, "speaker": "ryan"} for _ in range(4)]
    refused = client.post("/v1/tts/batch", json={"items": items, "join": True}, headers=headers)
    assert refused.status_code == 422
    assert refused.json["error"]["max_duration_s"] == 60  # type: ignore[index]
    assert fakes.jobs.all() == []
    # Without the join a batch may be any length.
    plain = client.post("/v1/tts/batch", json={"items": items}, headers=headers)
    assert plain.status_code == 202
    # Short enough to fit: accepted, and checked again exactly when the items have run.
    short = [{"text": "word " * 60, "speaker": "ryan"} for _ in range(4)]
    ok = client.post("/v1/tts/batch", json={"items": short, "join": True}, headers=headers)
    assert ok.status_code == 202
