"""Voice prompt files against a real (tiny) Base model: the facts a worker advertises come from
the loaded model's own config, a prompt the model made fits them, and a file that does not fit
is refused at load, naming the voice, before any of it reaches the model.

The tiny model has a 64-entry codebook, 16 code groups and a 32-value speaker embedding (the
released ones: 2048, 16, 1024 or 2048). On the CPU an out-of-range code is an ``IndexError``;
on a GPU the same lookup is a device-side assert, which breaks the worker's CUDA context.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gpu_worker.bucket_io import BucketIO
from gpu_worker.engine import Clone, Line
from gpu_worker.prompt_cache import PromptCache
from gpu_worker.synthesizer import ModelSet, Synthesizer
from gpu_worker.tasks import Task, TaskExecutor
from shared.domain.catalog import Language
from shared.domain.errors import InvalidVoice, SynthesisFailed
from shared.domain.modes import ModelType
from shared.domain.synthesis import ClonePromptRequest
from shared.domain.voice_file import PromptItem, VoicePromptFile, check_fits, dumps, max_frames
from shared.settings import EngineKind
from shared.usecases.gateway import Gateway
from tests.support.engines import tiny_synthesizer, tone_prompt
from tests.support.gateway import Fakes, add_voice

VOICE_ID = "v0000000042"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Synthesizer:
    from gpu_worker.tiny_model import build_tiny_model

    folder = tmp_path_factory.mktemp("tiny-base") / "base"
    synth = tiny_synthesizer(
        str(build_tiny_model(folder, model_type=ModelType.BASE)), kind=EngineKind.QWEN
    )
    synth.load()
    return synth


@pytest.fixture(scope="module")
def made(base: Synthesizer) -> PromptItem:
    """A prompt the model itself made, from a second of a tone (in-context: codes and text)."""
    return tone_prompt(base)


def test_the_facts_come_from_the_loaded_models_config_and_its_own_prompts_fit(
    base: Synthesizer, made: PromptItem
) -> None:
    facts = base.facts
    assert (facts.model_type, facts.codebook_size, facts.num_code_groups) == ("base", 64, 16)
    assert facts.speaker_embedding_dim == 32
    assert made.ref_code is not None
    assert tuple(made.ref_code.shape) == (13, 16)  # 1 s at 12.5 frames a second, rounded up
    assert made.ref_spk_embedding.numel() == 32
    check_fits(VoicePromptFile(items=(made,)), facts, frames=max_frames(1.0))


def altered(item: PromptItem, **changes: object) -> VoicePromptFile:
    return VoicePromptFile(items=(PromptItem(**{**item.as_kwargs(), **changes}),))  # type: ignore[arg-type]


BAD: dict[str, Callable[[PromptItem], VoicePromptFile]] = {
    "code_out_of_range": lambda item: altered(item, ref_code=item.ref_code + 64),  # type: ignore[operator]
    "wrong_code_groups": lambda item: altered(item, ref_code=item.ref_code[:, :8]),  # type: ignore[index]
    "wrong_embedding_size": lambda item: altered(
        item, ref_spk_embedding=item.ref_spk_embedding[:16]
    ),
}


@pytest.mark.parametrize("reason", sorted(BAD))
def test_a_prompt_that_does_not_fit_the_loaded_model_is_refused_before_it_reaches_it(
    base: Synthesizer, made: PromptItem, gateway: Gateway, fakes: Fakes, reason: str
) -> None:
    voice = add_voice(fakes, name="Narrator", owner="alice", voice_id=VOICE_ID)
    bad = BAD[reason](made)
    fakes.blobs.put(voice.object_name, dumps(bad), content_type="application/octet-stream")
    executor = TaskExecutor(
        # A synthesizer of its own: the module's model may be left failing by nothing here.
        models=ModelSet([Synthesizer(engine=base.engine, max_new_tokens=64)]),
        io=BucketIO(gateway=gateway, prompts=PromptCache(max_bytes=0, max_file_bytes=1 << 24)),
        limits=gateway.settings.voices,
        max_chunk_chars=300,
        max_join_s=60,
    )
    request = ClonePromptRequest(text="Hello there.", voice_id=VOICE_ID)
    with pytest.raises(InvalidVoice, match=f"voice {VOICE_ID} cannot be spoken by ") as refused:
        executor.execute(Task(id="job1", owner="alice", request=request, attempt=1))
    assert refused.value.details["reason"] == reason
    assert refused.value.field == "voice"


def test_without_the_check_the_model_itself_fails_on_an_out_of_range_code(
    base: Synthesizer, made: PromptItem
) -> None:
    """Why the check is there: here an IndexError answered as a failed synthesis (a 502), on
    a GPU a device-side assert that would have broken the worker."""
    line = Line(
        text="Hello there.",
        language=Language.ENGLISH,
        voice=Clone(prompt=BAD["code_out_of_range"](made)),
    )
    synth = Synthesizer(engine=base.engine, max_new_tokens=64)
    with pytest.raises(SynthesisFailed, match="index out of range"):
        synth.say(line)
