"""Voice prompt files that do not fit the model (over fakes, no model): a file whose codes,
code groups, speaker embedding or length do not fit is quarantined at registration (against the
models the backends advertise) and refused at load in the worker (against the model it has
loaded), as a 4xx naming the voice; a file that fits is spoken.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from flask.testing import FlaskClient

from functions.api.errors import openai_status, status_of
from gpu_worker.runner import Outcome
from shared.domain.backends import ModelFacts
from shared.domain.errors import InvalidVoice
from shared.domain.keys import Principal, Scope
from shared.domain.modes import ModelType
from shared.domain.voice_file import PromptItem, VoicePromptFile, dumps, max_frames
from shared.domain.voices import VoiceState, voice_id_for
from shared.settings import Settings
from shared.usecases.delivery import require_success
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import submit_job
from shared.usecases.registry import Registration, StoredObject, on_object_finalized
from shared.wire.bodies import ClonePromptBody
from shared.wire.messages import JobMessage
from tests.support.backends import heartbeat
from tests.support.fake_engine import BASE, FakeEngine, runner_over
from tests.support.gateway import Fakes, add_voice
from tests.support.worker import ScriptedWorker

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))


def prompt_file(
    *, codes: torch.Tensor | None = None, embedding: torch.Tensor | None = None
) -> bytes:
    item = PromptItem(
        ref_code=torch.randint(0, 2048, (20, 16)) if codes is None else codes,
        ref_spk_embedding=torch.randn(1024) if embedding is None else embedding,
        x_vector_only_mode=False,
        icl_mode=True,
        ref_text="A line.",
    )
    return dumps(VoicePromptFile(items=(item,), metadata={"name": "Narrator"}, model=BASE.model))


def code_of_5000() -> bytes:
    codes = torch.randint(0, 2048, (20, 16))
    codes[7, 3] = 5000
    return prompt_file(codes=codes)


BAD_FILES: dict[str, Callable[[], bytes]] = {
    "code_out_of_range": code_of_5000,
    "wrong_code_groups": lambda: prompt_file(codes=torch.randint(0, 2048, (20, 8))),
    "wrong_embedding_size": lambda: prompt_file(embedding=torch.randn(512)),
    "too_long": lambda: prompt_file(
        codes=torch.randint(0, 2048, (max_frames(Settings().voices.max_reference_s) + 1, 16))
    ),
}


def drop(fakes: Fakes, data: bytes, *, name: str = "voice-prompts/narrator.pt") -> StoredObject:
    blob = fakes.blobs.put(name, data, content_type="application/octet-stream")
    assert blob.generation is not None
    return StoredObject(
        bucket=fakes.blobs.bucket, name=name, generation=blob.generation, size=blob.size
    )


def advertise(fakes: Fakes, *facts: ModelFacts) -> None:
    """The home worker's heartbeat, with the facts of the models it loaded."""
    beat = heartbeat(modes=("clone_prompt",), models=tuple(f.model for f in facts))
    capabilities = beat.capabilities.model_copy(update={"model_facts": facts})
    fakes.backends.heartbeat(beat.model_copy(update={"capabilities": capabilities}))


@pytest.mark.parametrize("reason", sorted(BAD_FILES))
def test_a_file_that_does_not_fit_the_advertised_model_is_quarantined_with_the_reason(
    gateway: Gateway, fakes: Fakes, reason: str
) -> None:
    advertise(fakes, BASE)
    event = drop(fakes, BAD_FILES[reason]())
    assert on_object_finalized(gateway, event) is Registration.QUARANTINED
    voice = fakes.voices.get(voice_id_for(bucket="test-bucket", object_name=event.name))
    assert voice is not None
    assert voice.state is VoiceState.QUARANTINED
    assert voice.quarantine_reason is not None
    assert voice.quarantine_reason.startswith(f"{reason}: ")
    assert "voice-prompts/narrator.pt" not in fakes.blobs.objects  # moved to quarantine


def test_a_file_that_fits_one_of_the_advertised_models_is_registered(
    gateway: Gateway, fakes: Fakes
) -> None:
    small = BASE.model_copy(update={"model": "0.6B-Base", "speaker_embedding_dim": 512})
    custom = ModelFacts(
        model="CustomVoice", model_type=ModelType.CUSTOM_VOICE, codebook_size=2048,
        num_code_groups=16,
    )  # fmt: skip
    advertise(fakes, custom, small, BASE)
    assert on_object_finalized(gateway, drop(fakes, prompt_file())) is Registration.REGISTERED
    # Against the small model alone the same file is refused, naming that model's size.
    advertise(fakes, small)
    other = drop(fakes, prompt_file(), name="voice-prompts/other.pt")
    assert on_object_finalized(gateway, other) is Registration.QUARANTINED
    voice = fakes.voices.get(voice_id_for(bucket="test-bucket", object_name=other.name))
    assert voice is not None
    assert voice.quarantine_reason is not None
    assert "0.6B-Base takes 512" in voice.quarantine_reason


@pytest.mark.parametrize("reason", sorted(BAD_FILES))
def test_a_file_that_does_not_fit_the_loaded_model_is_refused_at_load_as_a_4xx_naming_the_voice(
    gateway: Gateway, fakes: Fakes, reason: str
) -> None:
    # Registered before any backend advertised its model (or before these checks existed):
    # the worker's own check is what keeps the file from the GPU.
    voice = add_voice(fakes, name="Narrator", owner="alice", voice_id="v0000000001")
    fakes.blobs.put(voice.object_name, BAD_FILES[reason](), content_type="application/x")
    voice_id = voice.id
    job = submit_job(gateway, principal=ALICE, request=ClonePromptBody(text="Hi.", voice=voice_id))
    engine = FakeEngine()
    result = runner_over(gateway, engine).run(JobMessage(job_id=job.id))
    assert engine.calls == []  # nothing of the file reached the model
    assert (result.outcome, result.ack) == (Outcome.FAILED, True)
    failed = fakes.jobs.get(job.id)
    assert failed is not None
    assert failed.error is not None
    assert failed.error.code == "invalid_voice"
    assert f"voice {voice_id} cannot be spoken by fake-base" in failed.error.message
    with pytest.raises(InvalidVoice) as refused:
        require_success(failed)
    assert refused.value.field == "voice"
    assert (status_of(refused.value), openai_status(refused.value)) == (422, 400)


def test_a_voice_that_fits_the_loaded_model_is_spoken(gateway: Gateway, fakes: Fakes) -> None:
    event = drop(fakes, prompt_file())
    assert on_object_finalized(gateway, event) is Registration.REGISTERED
    voice_id = voice_id_for(bucket="test-bucket", object_name=event.name)
    job = submit_job(gateway, principal=ALICE, request=ClonePromptBody(text="Hi.", voice=voice_id))
    engine = FakeEngine()
    assert runner_over(gateway, engine).run(JobMessage(job_id=job.id)).outcome is (
        Outcome.SUCCEEDED
    )
    assert engine.calls == [["Hi."]]


def test_a_synthesis_refused_for_its_voice_answers_the_caller_400_naming_the_voice(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    add_voice(fakes, name="Narrator", owner="alice", voice_id="v0000000001")
    ScriptedWorker(fakes, fail_with="invalid_voice")
    response = client.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": "Hello there.", "voice": "narrator"},
        headers=alice,
    )
    assert response.status_code == 400
    error = response.json["error"]  # type: ignore[index]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "invalid_voice",
        "voice",
    )


def test_a_voice_gone_before_its_job_runs_is_the_callers_invalid_voice(gateway: Gateway) -> None:
    """Deleted (or quarantined) between acceptance and the run: a 422 naming the voice, never
    a failed synthesis."""
    from gpu_worker.bucket_io import BucketIO
    from gpu_worker.prompt_cache import PromptCache

    io = BucketIO(gateway=gateway, prompts=PromptCache(max_bytes=0, max_file_bytes=1 << 20))
    with pytest.raises(InvalidVoice, match="v-gone is unknown") as raised:
        io.prompt("v-gone")
    assert status_of(raised.value) == 422
