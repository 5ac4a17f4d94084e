"""The content-addressed cache over fakes: a repeated seeded request costs no GPU work (counted),
the hit shows on the job, and a private voice's audio is never served to another owner."""

from __future__ import annotations

from gpu_worker.runner import JobRunner, RunnerConfig
from gpu_worker.tasks import Task
from shared.domain.jobs import AudioResult, JobOutput, JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import ClonePromptRequest, CustomVoiceRequest
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from shared.wire.bodies import ClonePromptBody, JobOptions
from shared.wire.messages import JobMessage
from tests.support.backends import heartbeat
from tests.support.gateway import Fakes, add_voice

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))
BOB = Principal(owner="bob", scopes=frozenset({Scope.USER}))
AUDIO = AudioResult(
    uri="gs://test-bucket/audio/x.wav", format="wav", content_type="audio/wav",
    sample_rate=24000, duration_s=1.0, bytes=48044,
)  # fmt: skip


class CountingGpu:
    def __init__(self) -> None:
        self.runs = 0

    def execute(self, task: Task) -> JobOutput:
        self.runs += 1
        return JobOutput(
            audio=AUDIO.model_copy(update={"uri": f"gs://test-bucket/audio/{task.id}.wav"})
        )


def run_all(gw: Gateway, fakes: Fakes, gpu: CountingGpu) -> None:
    config = RunnerConfig(worker_id="w1", backend_id="home-4090", lease_s=60)
    runner = JobRunner(gateway=gw, executor=gpu, config=config)
    for job in fakes.jobs.find(state=JobState.QUEUED, limit=100):
        runner.run(JobMessage(job_id=job.id))


def test_a_repeated_seeded_request_is_served_without_gpu_work(
    gateway: Gateway, fakes: Fakes
) -> None:
    gpu = CountingGpu()
    first = submit_job(
        gateway,
        principal=ALICE,
        request=CustomVoiceRequest(text="Call me Ishmael.", speaker="ryan", seed=7),
    )
    run_all(gateway, fakes, gpu)
    # The same words, spaced differently, from the same owner.
    again = submit_job(
        gateway,
        principal=ALICE,
        request=CustomVoiceRequest(text="  Call me   Ishmael. ", speaker="Ryan", seed=7),
    )
    assert gpu.runs == 1
    assert again.state is JobState.SUCCEEDED
    assert again.cached_from == first.id
    assert again.result is not None
    assert again.result.uri == f"gs://test-bucket/audio/{first.id}.wav"
    assert not [
        m for m in fakes.publisher.messages if m.topic == "tts-jobs" and again.id.encode() in m.data
    ]
    # Another seed, or no seed without opting in, is new work.
    submit_job(
        gateway,
        principal=ALICE,
        request=CustomVoiceRequest(text="Call me Ishmael.", speaker="ryan", seed=8),
    )
    submit_job(
        gateway,
        principal=ALICE,
        request=CustomVoiceRequest(text="Call me Ishmael.", speaker="ryan"),
    )
    run_all(gateway, fakes, gpu)
    assert gpu.runs == 3


def test_an_unseeded_request_may_opt_in(gateway: Gateway, fakes: Fakes) -> None:
    gpu = CountingGpu()
    request = CustomVoiceRequest(text="Opt in.", speaker="ryan")
    submit_job(gateway, principal=ALICE, request=request, options=JobOptions(cache=True))
    run_all(gateway, fakes, gpu)
    hit = submit_job(gateway, principal=ALICE, request=request, options=JobOptions(cache=True))
    assert (gpu.runs, hit.state) == (1, JobState.SUCCEEDED)


def test_a_checked_request_is_never_answered_by_unchecked_audio(
    gateway: Gateway, fakes: Fakes
) -> None:
    """Unchecked audio has no report and no word timings, and may hold a chunk a check would
    have said again: a request that asks for checks is its own entry."""
    gpu = CountingGpu()
    plain = CustomVoiceRequest(text="Checked or not.", speaker="ryan", seed=3)
    submit_job(gateway, principal=ALICE, request=plain)
    run_all(gateway, fakes, gpu)
    checked = plain.model_copy(update={"verify": True})
    submit_job(gateway, principal=ALICE, request=checked)
    run_all(gateway, fakes, gpu)
    hit = submit_job(gateway, principal=ALICE, request=checked)
    assert (gpu.runs, hit.state) == (2, JobState.SUCCEEDED)


def test_a_private_voices_audio_is_never_served_to_another_owner(
    gateway: Gateway, fakes: Fakes
) -> None:
    gpu = CountingGpu()
    add_voice(fakes, name="Shared", owner=None, voice_id="v00000shared")
    add_voice(fakes, name="Mine", owner="alice", voice_id="v0000000mine")
    admin = Principal(owner="carol", scopes=frozenset({Scope.USER, Scope.ADMIN}))
    body = ClonePromptBody(text="Hello.", voice="v0000000mine", seed=1)
    submit_job(gateway, principal=ALICE, request=body)
    run_all(gateway, fakes, gpu)
    assert submit_job(gateway, principal=ALICE, request=body).state is JobState.SUCCEEDED
    # An admin may use alice's voice, but gets audio of their own making.
    assert submit_job(gateway, principal=admin, request=body).state is JobState.QUEUED
    shared = ClonePromptBody(text="Hello.", voice="v00000shared", seed=1)
    submit_job(gateway, principal=ALICE, request=shared)
    run_all(gateway, fakes, gpu)
    assert submit_job(gateway, principal=ALICE, request=shared).state is JobState.SUCCEEDED
    # Another owner's identical request is work of its own: a hit would tell bob that someone
    # spoke these words with this seed, and which job did.
    theirs = submit_job(gateway, principal=BOB, request=shared)
    assert theirs.state is JobState.QUEUED
    assert theirs.cached_from is None


def test_an_overwritten_prompt_never_serves_its_old_audio(gateway: Gateway, fakes: Fakes) -> None:
    gpu = CountingGpu()
    voice = add_voice(fakes, name="Narrator", owner=None, voice_id="v0000000narr")
    request = ClonePromptRequest(text="Hello.", voice_id=voice.id, seed=1)
    body = ClonePromptBody(text="Hello.", voice=voice.id, seed=1)
    submit_job(gateway, principal=ALICE, request=body)
    run_all(gateway, fakes, gpu)
    fakes.voices.update(voice.id, lambda v: v.model_copy(update={"generation": 2}) if v else None)
    assert submit_job(gateway, principal=ALICE, request=body).state is JobState.QUEUED
    assert request.voice_id == voice.id


def test_cache_false_always_synthesizes_afresh(gateway: Gateway, fakes: Fakes) -> None:
    gpu = CountingGpu()
    request = CustomVoiceRequest(text="Fresh.", speaker="ryan", seed=3)
    submit_job(gateway, principal=ALICE, request=request)
    run_all(gateway, fakes, gpu)
    fresh = submit_job(gateway, principal=ALICE, request=request, options=JobOptions(cache=False))
    assert (fresh.state, fresh.cache_key) == (JobState.QUEUED, None)


def test_a_backend_that_changed_its_models_serves_no_audio_of_the_old_ones(
    gateway: Gateway, fakes: Fakes
) -> None:

    def serve(model: str) -> None:
        fakes.backends.heartbeat(heartbeat(models=(model,)))

    gpu = CountingGpu()
    request = CustomVoiceRequest(text="Upgrade.", speaker="ryan", seed=3)
    serve("Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice")
    submit_job(gateway, principal=ALICE, request=request)
    run_all(gateway, fakes, gpu)
    assert submit_job(gateway, principal=ALICE, request=request).state is JobState.SUCCEEDED
    serve("Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice")
    assert submit_job(gateway, principal=ALICE, request=request).state is JobState.QUEUED


def test_a_rerouted_job_does_not_feed_the_cache_of_the_backend_it_left(
    gateway: Gateway, fakes: Fakes
) -> None:
    job = submit_job(
        gateway, principal=ALICE, request=CustomVoiceRequest(text="Moved.", speaker="ryan", seed=2)
    )
    assert job.cache_key is not None
    moved = fakes.jobs.update(job.id, lambda j: j.reroute("elsewhere", now=fakes.clock()))
    assert moved.cache_key is None
