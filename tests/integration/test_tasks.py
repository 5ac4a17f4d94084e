"""Every job mode through the real qwen-tts code path on the tiny models (stores are fakes)."""

from __future__ import annotations

import base64
import inspect
import io
import json
import zipfile

import numpy as np
import pytest
import soundfile as sf
from pytest_mock import MockerFixture

from gpu_worker.bucket_io import BucketIO
from gpu_worker.prompt_cache import PromptCache
from gpu_worker.runner import JobRunner, Outcome, RunnerConfig
from gpu_worker.synthesizer import ModelSet, Synthesizer
from gpu_worker.tasks import TaskExecutor
from shared.domain.jobs import Job, JobState, Progress
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest, VoiceDesignRequest
from shared.domain.voices import VoiceState
from shared.settings import EngineKind
from shared.usecases import library, parents
from shared.usecases.casting import cast_voices
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import create_voice, normalize_audio, submit_job
from shared.wire.bodies import (
    CastBody,
    CastItem,
    ClonePromptBody,
    CreateVoiceBody,
    JobOptions,
    NormalizeBody,
    VoiceCloneBody,
)
from shared.wire.messages import JobMessage
from tests.support.engines import tiny_synthesizer
from tests.support.gateway import Fakes

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))
RATE = 24_000
FRAME = 1920  # samples per 12.5 Hz codec frame


@pytest.fixture(scope="module")
def models(tiny_models_dir: dict[str, str]) -> ModelSet:
    synths = [tiny_synthesizer(source, kind=EngineKind.QWEN) for source in tiny_models_dir.values()]
    for synth in synths:
        synth.load()
    return ModelSet(synths)


@pytest.fixture
def executor(gateway: Gateway, models: ModelSet) -> TaskExecutor:
    prompts = PromptCache(max_bytes=1 << 20, max_file_bytes=1 << 20)
    return TaskExecutor(
        models=models,
        io=BucketIO(gateway=gateway, prompts=prompts),
        limits=gateway.settings.voices,
        max_chunk_chars=60,
        max_join_s=gateway.settings.worker.max_join_s,
    )


@pytest.fixture
def runner(gateway: Gateway, executor: TaskExecutor) -> JobRunner:
    return JobRunner(
        gateway=gateway,
        executor=executor,
        config=RunnerConfig(worker_id="w1", backend_id="home-4090", lease_s=60),
    )


def run(gateway: Gateway, runner: JobRunner, job: Job) -> Job:
    result = runner.run(JobMessage(job_id=job.id))
    done = gateway.jobs.get(job.id)
    assert done is not None
    assert result.outcome is Outcome.SUCCEEDED, done.error
    return done


def tone(seconds: float = 2.0, *, fmt: str = "WAV", level: float = 0.1) -> bytes:
    t = np.arange(int(24000 * seconds), dtype=np.float32) / 24000
    rng = np.random.default_rng(0)
    signal = level * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(len(t))
    buffer = io.BytesIO()
    sf.write(buffer, signal.astype(np.float32), 24000, format=fmt)
    return buffer.getvalue()


def spoken_audio(fakes: Fakes, job: Job) -> np.ndarray:
    """The job's audio, checked against what the job says of it: a 16-bit mono WAV at 24 kHz,
    stored under the attempt that made it, of whole codec frames."""
    path = f"audio/{job.id}/{job.attempts}.wav"
    data = fakes.blobs.objects[path][0]
    info = sf.info(io.BytesIO(data))
    assert (info.format, info.subtype, info.channels, info.samplerate) == ("WAV", "PCM_16", 1, RATE)
    samples, _ = sf.read(io.BytesIO(data), dtype="float32")
    assert job.result is not None
    assert job.result.model_dump(mode="json") == {
        "uri": f"gs://{fakes.blobs.bucket}/{path}",
        "format": "wav",
        "content_type": "audio/wav",
        "sample_rate": RATE,
        "duration_s": pytest.approx(len(samples) / RATE),
        "bytes": 44 + 2 * len(samples),  # the RIFF header, then two bytes a sample
        "parts": 0,
        "verification": None,  # not asked for (``verify``)
        "words": [],
        "starts_s": [],
    }
    assert len(samples) >= FRAME
    assert len(samples) % FRAME == 0
    return samples


def audio_of(fakes: Fakes, job: Job) -> tuple[np.ndarray, int]:
    assert job.result is not None
    path = job.result.uri.removeprefix(f"gs://{fakes.blobs.bucket}/")
    samples, rate = sf.read(io.BytesIO(fakes.blobs.objects[path][0]), dtype="float32")
    return samples, rate


def test_the_worker_offers_every_mode_its_models_allow(models: ModelSet) -> None:
    assert set(models.modes) == {
        "custom_voice", "voice_design", "voice_clone", "clone_prompt", "create_voice",
        "design_voice", "normalize", "join",
    }  # fmt: skip


def test_voice_design(gateway: Gateway, runner: JobRunner, fakes: Fakes) -> None:
    job = submit_job(
        gateway,
        principal=ALICE,
        request=VoiceDesignRequest(text="Ahoy.", instruct="a gravelly old sailor", seed=1),
    )
    done = run(gateway, runner, job)
    spoken_audio(fakes, done)


def test_voice_clone_from_reference_audio(
    gateway: Gateway, runner: JobRunner, fakes: Fakes
) -> None:
    for body in (
        {"ref_text": "A reference line."},
        {"x_vector_only": True},
    ):
        request = VoiceCloneBody.model_validate(
            {"text": "Hello.", "ref_audio": base64.b64encode(tone(fmt="FLAC")).decode(), **body}
        )
        done = run(gateway, runner, submit_job(gateway, principal=ALICE, request=request))
        spoken_audio(fakes, done)


def test_a_long_clone_encodes_its_reference_once(
    gateway: Gateway, runner: JobRunner, models: ModelSet, mocker: MockerFixture
) -> None:
    base = models.of_type("base")
    encode_spy = mocker.spy(base, "create_voice_prompt")
    speak_spy = mocker.spy(base, "speak")
    request = VoiceCloneBody.model_validate(
        {
            "text": "One sentence of the chapter. Another sentence follows. And a third one ends.",
            "ref_audio": base64.b64encode(tone()).decode(),
            "x_vector_only": True,
        }
    )
    run(gateway, runner, submit_job(gateway, principal=ALICE, request=request))
    assert encode_spy.call_count == 1
    assert sum(len(call.args[0]) for call in speak_spy.call_args_list) > 1


def test_create_a_voice_then_speak_with_it_twice_with_one_download(
    gateway: Gateway, runner: JobRunner, fakes: Fakes
) -> None:
    body = CreateVoiceBody(name="Captain", ref_text="Ahoy there.", character="captain")
    created = run(gateway, runner, create_voice(gateway, principal=ALICE, body=body, audio=tone()))
    assert created.voice_id is not None
    voice = gateway.voices.get(created.voice_id)
    assert voice is not None
    assert (voice.state, voice.owner, voice.name) == (VoiceState.ACTIVE, "alice", "Captain")
    assert voice.reference_path is not None
    assert voice.reference_path in fakes.blobs.objects  # the reference is kept beside it

    for _ in range(2):
        request = ClonePromptBody(text="Speak, captain.", voice="captain")
        run(gateway, runner, submit_job(gateway, principal=ALICE, request=request))
    assert fakes.blobs.downloads[voice.object_name] == 1  # the second use hit the cache

    name, package = library.package_voice(gateway, principal=ALICE, voice_id=voice.id)
    assert name == "Captain.zip"
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        assert archive.namelist() == ["voice.json", "prompt.pt", "reference.wav"]
        assert json.loads(archive.read("voice.json")) == {
            "name": "Captain",
            "ref_text": "Ahoy there.",
            "x_vector_only": False,
            "model": voice.model,
            "character": "captain",
            "tags": [],
        }
        assert archive.read("prompt.pt") == fakes.blobs.objects[voice.object_name][0]
        assert archive.read("reference.wav") == fakes.blobs.objects[voice.reference_path][0]


def test_a_seed_makes_the_audio_repeatable(
    gateway: Gateway, runner: JobRunner, fakes: Fakes
) -> None:
    def speak(seed: int) -> np.ndarray:
        request = CustomVoiceRequest(text="Same words.", speaker="ryan", seed=seed)
        # Not from the cache: the model itself must say the same thing twice.
        fresh = JobOptions(cache=False)
        job = submit_job(gateway, principal=ALICE, request=request, options=fresh)
        done = run(gateway, runner, job)
        assert done.cached_from is None
        return audio_of(fakes, done)[0]

    first, again, other = speak(7), speak(7), speak(8)
    assert np.array_equal(first, again)
    assert not (len(first) == len(other) and np.array_equal(first, other))


def test_long_text_is_spoken_in_sentence_chunks_and_joined(
    gateway: Gateway, runner: JobRunner, models: ModelSet, mocker: MockerFixture
) -> None:
    synth = models.of_type("custom_voice")
    spy = mocker.spy(synth, "say")
    text = "The first sentence is here. A second one follows it. Then a third, and the end."
    request = CustomVoiceRequest(text=text, speaker="ryan", seed=3)
    run(gateway, runner, submit_job(gateway, principal=ALICE, request=request))
    chunks = [call.args[0].text for call in spy.call_args_list]
    # Whole sentences up to max_chunk_chars (60), each chunk with the next seed.
    assert chunks == [
        "The first sentence is here. A second one follows it.",
        "Then a third, and the end.",
    ]
    assert [call.kwargs["seed"] for call in spy.call_args_list] == [3, 4]


def test_casting_designs_and_registers_one_voice_per_emotion(
    gateway: Gateway, runner: JobRunner, fakes: Fakes
) -> None:
    """A batch of clone-prompt items: every item runs (a past handler died on a NameError here)."""
    body = CastBody(
        character="Mira",
        base_description="A young woman with a clear alto voice",
        text="I never thought I would see this place again.",
        items=(CastItem(emotion="happy"), CastItem(emotion="sad", intensity="high")),
        seed=5,
    )
    parent = cast_voices(gateway, principal=ALICE, body=body)
    assert parent.request.mode == "cast"
    children = parent.request.children  # type: ignore[union-attr]
    for child_id in children:
        child = gateway.jobs.get(child_id)
        assert child is not None
        done = run(gateway, runner, child)
        voice = gateway.voices.get(done.voice_id or "")
        assert voice is not None
        assert voice.traits.character == "Mira"
    settled = gateway.jobs.get(parent.id)
    assert settled is not None
    assert settled.state is JobState.SUCCEEDED
    counted = parents.progress(gateway, settled)
    assert counted == Progress(total=len(children), succeeded=len(children), failed=0)
    emotions = {v.traits.emotion for v in gateway.voices.query(character="Mira", limit=10)}
    assert emotions == {"happy", "sad"}


def test_normalize_reaches_the_target_loudness(
    gateway: Gateway, runner: JobRunner, fakes: Fakes
) -> None:
    import pyloudnorm

    body = NormalizeBody.model_validate(
        {"audio": base64.b64encode(tone(3.0, level=0.02)).decode(), "target_lufs": -18}
    )
    done = run(gateway, runner, normalize_audio(gateway, principal=ALICE, body=body))
    samples, rate = audio_of(fakes, done)
    assert pyloudnorm.Meter(rate).integrated_loudness(samples) == pytest.approx(-18, abs=0.3)


def test_every_engine_method_is_keyword_only() -> None:
    """Keyword-only engine calls with typed values: positional arguments could be swapped and
    bytes passed where base64 was meant."""
    checked = []
    for name, method in inspect.getmembers(Synthesizer, inspect.isfunction):
        if name.startswith(("generate_", "create_")):
            parameters = list(inspect.signature(method).parameters.values())[1:]
            assert parameters, name
            assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters), name
            checked.append(name)
    # Every engine call was looked at: a renamed one is not passed over in silence.
    assert checked == [
        "create_voice_prompt",
        "generate_custom_voice",
        "generate_from_prompt",
        "generate_voice_design",
    ]
