"""What each job mode does on a worker: gather its inputs, call the models, publish voices.

The runner owns the job's lifecycle (claim, lease, finish); this module owns the work. Inputs
that live in the bucket (reference clips, voice prompts) are fetched here, so the engine only
ever sees typed values: waveforms, prompt files, text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from gpu_worker.engine import ModelSet
from gpu_worker.prompt_cache import PromptCache
from shared.audio import Waveform, encode
from shared.audio_formats import AudioFormat
from shared.audio_ops import decode, join_waves
from shared.errors import NotFound, SynthesisFailed
from shared.jobs import Job
from shared.loudness import normalize
from shared.registry import Registration, StoredObject, on_object_finalized
from shared.service import Gateway
from shared.synthesis import (
    AudioRef,
    CastRequest,
    ClonePromptRequest,
    CreateVoiceRequest,
    CustomVoiceRequest,
    DesignVoiceRequest,
    NormalizeRequest,
    SpeechRequest,
    VoiceCloneRequest,
    VoiceDesignRequest,
    VoiceTraits,
)
from shared.text_split import split_text
from shared.voice_file import PromptItem, VoicePromptFile, dumps
from shared.voices import REFERENCE_SUFFIX, prompt_object_name, voice_id_for

log = logging.getLogger(__name__)


Speak = Callable[[str, int | None], Waveform]
"""Say one chunk of text with a given seed."""


@dataclass(frozen=True, slots=True)
class TaskOutput:
    audio: Waveform | None = None
    voice_id: str | None = None


class TaskExecutor:
    def __init__(
        self, *, gateway: Gateway, models: ModelSet, prompts: PromptCache, max_chunk_chars: int
    ) -> None:
        self._gw = gateway
        self._models = models
        self._prompts = prompts
        self._max_chunk_chars = max_chunk_chars

    @property
    def modes(self) -> tuple[str, ...]:
        return self._models.modes

    def execute(self, job: Job) -> TaskOutput:
        request = job.request
        match request:
            case (
                CustomVoiceRequest()
                | VoiceDesignRequest()
                | VoiceCloneRequest()
                | (ClonePromptRequest())
            ):
                return TaskOutput(audio=self._speak(request))
            case CreateVoiceRequest():
                return self._create_voice(job, request)
            case DesignVoiceRequest():
                return self._design_voice(job, request)
            case NormalizeRequest():
                return self._normalize(request)
            case CastRequest():
                raise SynthesisFailed("a cast parent is bookkeeping; no worker runs it")

    # -- speech -----------------------------------------------------------------------------

    def _speak(self, request: SpeechRequest) -> Waveform:
        """Long text is spoken sentence group by sentence group, then joined."""
        chunks = split_text(request.text, max_chars=self._max_chunk_chars)
        speak = self._speaker(request)
        waves = [
            speak(chunk, None if request.seed is None else request.seed + index)
            for index, chunk in enumerate(chunks)
        ]
        return waves[0] if len(waves) == 1 else join_waves(waves)

    def _speaker(self, request: SpeechRequest) -> Speak:
        models = self._models
        match request:
            case CustomVoiceRequest():
                engine = models.of_type("custom_voice")
                return lambda text, seed: engine.generate_custom_voice(
                    text=text,
                    speaker=request.speaker,
                    language=request.language,
                    instruct=request.instruct,
                    seed=seed,
                )
            case VoiceDesignRequest():
                engine = models.of_type("voice_design")
                return lambda text, seed: engine.generate_voice_design(
                    text=text, instruct=request.instruct, language=request.language, seed=seed
                )
            case VoiceCloneRequest():
                engine = models.of_type("base")
                # Encode the reference once, not once per chunk of a long text.
                items = engine.create_voice_prompt(
                    reference=self._reference(request.reference),
                    ref_text=request.ref_text,
                    x_vector_only=request.x_vector_only,
                )
                cloned = VoicePromptFile(items=items)
                return lambda text, seed: engine.generate_from_prompt(
                    text=text, language=request.language, prompt=cloned, seed=seed
                )
            case ClonePromptRequest():
                engine = models.of_type("base")
                prompt = self._prompt(request.voice_id)
                return lambda text, seed: engine.generate_from_prompt(
                    text=text, language=request.language, prompt=prompt, seed=seed
                )

    def _reference(self, ref: AudioRef) -> Waveform:
        limits = self._gw.settings.voices
        try:
            data = self._gw.blobs.get(ref.path, max_bytes=limits.max_audio_bytes)
        except NotFound as exc:
            raise SynthesisFailed(f"the uploaded reference audio is gone: {ref.path}") from exc
        return decode(data, max_duration_s=limits.max_reference_s)

    def _prompt(self, voice_id: str) -> VoicePromptFile:
        voice = self._gw.voices.get(voice_id)
        if voice is None or not voice.active:
            state = "unknown" if voice is None else voice.state.value
            raise SynthesisFailed(f"voice {voice_id} is {state}", field="voice")
        return self._prompts.get(voice.object_name, generation=voice.generation)

    # -- voices -----------------------------------------------------------------------------

    def _create_voice(self, job: Job, request: CreateVoiceRequest) -> TaskOutput:
        items = self._models.of_type("base").create_voice_prompt(
            reference=self._reference(request.reference),
            ref_text=request.ref_text,
            x_vector_only=request.x_vector_only,
        )
        voice_id = self._publish_voice(
            job,
            name=request.name,
            traits=request.traits,
            items=items,
            ref_text=request.ref_text,
            reference_path=request.reference.path,
        )
        return TaskOutput(voice_id=voice_id)

    def _design_voice(self, job: Job, request: DesignVoiceRequest) -> TaskOutput:
        """Design a line from the description, then lock that voice as a clone prompt."""
        line = self._models.of_type("voice_design").generate_voice_design(
            text=request.text,
            instruct=request.instruct,
            language=request.language,
            seed=request.seed,
        )
        items = self._models.of_type("base").create_voice_prompt(
            reference=line, ref_text=request.text, x_vector_only=False
        )
        encoded = encode(line, fmt=AudioFormat.WAV)
        reference_path = f"{self._gw.settings.voices.prefix}{job.id}{REFERENCE_SUFFIX}.wav"
        self._gw.blobs.put(reference_path, encoded.data, content_type=encoded.content_type)
        voice_id = self._publish_voice(
            job,
            name=request.name,
            traits=request.traits,
            items=items,
            ref_text=request.text,
            reference_path=reference_path,
        )
        return TaskOutput(audio=line, voice_id=voice_id)

    def _publish_voice(
        self,
        job: Job,
        *,
        name: str,
        traits: VoiceTraits,
        items: tuple[PromptItem, ...],
        ref_text: str | None,
        reference_path: str,
    ) -> str:
        """Write the sidecar and the prompt, then register it without waiting for the event.

        The storage event for the same generation arrives later and finds it registered.
        """
        gw = self._gw
        settings = gw.settings
        name_in_bucket = prompt_object_name(prefix=settings.voices.prefix, stem=job.id)
        fields = {
            "name": name,
            "owner": job.owner,
            "reference_path": reference_path,
            "job_id": job.id,
            **({"ref_text": ref_text} if ref_text else {}),
        }
        sidecar = {**traits.model_dump(mode="json", exclude_none=True), **fields}
        gw.blobs.put(
            name_in_bucket.removesuffix(".pt") + ".json",
            json.dumps(sidecar).encode(),
            content_type="application/json",
        )
        model = self._models.of_type("base").model_source
        data = dumps(VoicePromptFile(items=items, metadata={"name": name}, model=model))
        stored = gw.blobs.put(name_in_bucket, data, content_type="application/octet-stream")
        outcome = on_object_finalized(
            gw,
            StoredObject(
                bucket=settings.bucket,
                name=name_in_bucket,
                generation=stored.generation or 0,
                size=stored.size,
                metadata=fields,
            ),
            data=data,
        )
        if outcome is Registration.QUARANTINED:
            raise SynthesisFailed("the prompt this worker built failed validation")
        return voice_id_for(bucket=settings.bucket, object_name=name_in_bucket)

    # -- audio ------------------------------------------------------------------------------

    def _normalize(self, request: NormalizeRequest) -> TaskOutput:
        limits = self._gw.settings.voices
        data = self._gw.blobs.get(request.source.path, max_bytes=limits.max_audio_bytes)
        wave = decode(data, max_duration_s=limits.max_normalize_s)
        result = normalize(wave, target_lufs=request.target_lufs, peak_dbfs=request.peak_dbfs)
        log.info(
            "normalized",
            extra={
                "input_lufs": round(result.input_lufs, 2),
                "output_lufs": round(result.output_lufs, 2),
                "gain_db": round(result.gain_db, 2),
                "peak_limited": result.peak_limited,
            },
        )
        return TaskOutput(audio=result.wave)
