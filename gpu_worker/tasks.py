"""What each job mode does on a worker: gather its inputs, call the models, store the results.

Both worker entry points run tasks through ``TaskExecutor.execute``: the 4090 subscriber (via
the job runner, which owns claim, lease and finish) and the RunPod handler (which holds no
Google credentials). Where inputs come from and results go is the ``TaskIO`` port: the bucket
and the registry at home, short-lived signed URLs on RunPod. The engine only ever sees typed
values: waveforms, prompt files, text.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from concurrent.futures import Future
from contextlib import closing
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol

import numpy as np

from gpu_worker.audio.encoding import (
    EncodedAudio,
    StreamEncoder,
    Waveform,
    decode_output,
    encode,
    stretch,
)
from gpu_worker.audio.loudness import normalize
from gpu_worker.audio.ops import (
    JOINT_GAP_S,
    StreamedClip,
    concatenate,
    decode,
    join_waves,
    joint,
)
from gpu_worker.engine import Clone, Design, Line, Speaker, Voice
from gpu_worker.pipeline import Stage, StageConfig
from gpu_worker.verify.checker import Chunk, Remake, Verifier, place_words
from shared.domain.audio_formats import AudioFormat
from shared.domain.audio_input import CONTENT_TYPES
from shared.domain.errors import (
    GatewayError,
    InvalidTransition,
    InvalidVoice,
    InvalidVoiceFile,
    JobCanceled,
    NotFound,
    SynthesisFailed,
)
from shared.domain.jobs import AudioResult, Job, JobOutput
from shared.domain.modes import Mode, ModelType
from shared.domain.synthesis import (
    AudioRef,
    BatchRequest,
    CastRequest,
    ClonePromptRequest,
    CreateVoiceRequest,
    CustomVoiceRequest,
    DesignVoiceRequest,
    JobRequest,
    JoinRequest,
    JoinSource,
    NormalizeRequest,
    SpeechRequest,
    VoiceCloneRequest,
    VoiceDesignRequest,
    VoiceTraits,
)
from shared.domain.text_split import split_for_stream, split_text
from shared.domain.verification import VerifyReport, WordTiming
from shared.domain.voice_file import PromptItem, VoicePromptFile, check_fits, dumps, max_frames
from shared.settings import VoiceSettings, WorkerSettings

if TYPE_CHECKING:
    from datetime import datetime

    from gpu_worker.synthesizer import ModelSet, Spoken, Synthesizer

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Task:
    """The part of a job a worker needs: who asked, and what."""

    id: str
    owner: str
    request: JobRequest
    attempt: int
    """The claim this run holds: what it writes is keyed by it, and it stops once the job's
    current attempt is another (canceled, retried, or re-claimed after its lease ran out)."""
    created_at: datetime | None = field(default=None, compare=False)
    """When the job was submitted: time to first audio is measured from it (not part of what
    the task is)."""
    claim: Future[Job] | None = field(default=None, compare=False, repr=False)
    """The claim this run is under, while it may still be committing; ``None``: committed."""

    @classmethod
    def of(cls, job: Job, *, claim: Future[Job] | None = None) -> Task:
        """``job``'s task; ``claim``: the claim that makes ``job`` (claimed) true, still on its
        way: the run may start, and must not write, before it commits."""
        return cls(
            id=job.id,
            owner=job.owner,
            request=job.request,
            attempt=job.attempts,
            created_at=job.created_at,
            claim=claim,
        )

    def wait_claimed(self) -> None:
        """Return once this run's claim has committed; raise ``JobCanceled`` where it did not
        (the job is another worker's, canceled, gone, or on another attempt). A streamed job's
        generation starts beside its claim (``runner``), so nothing it writes may go out, and
        nothing it reads may be trusted, before this returns. A store that failed is raised."""
        if self.claim is None:
            return
        try:
            claimed = self.claim.result()
        except (NotFound, InvalidTransition) as exc:
            raise JobCanceled(f"job {self.id} was not claimed: {exc.message}") from exc
        if claimed.attempts != self.attempt:
            raise JobCanceled(
                f"job {self.id} was claimed as attempt {claimed.attempts}, not {self.attempt}"
            )


@dataclass(frozen=True, kw_only=True)
class NewVoice:
    """A clone prompt a task built, ready to be written beside its reference and registered."""

    voice_id: str
    prompt: bytes
    fields: dict[str, str]
    """Sidecar fields: name, owner, traits, ref_text."""
    reference: Clip
    """Kept beside the prompt as the voice's reference: the uploaded clip, or a casting line."""


@dataclass(frozen=True, kw_only=True)
class Clip:
    data: bytes
    extension: str
    content_type: str


class TaskIO(Protocol):
    def reference(self, ref: AudioRef) -> bytes: ...

    def prompt(self, voice_id: str) -> VoicePromptFile: ...

    def store_audio(self, task: Task, audio: EncodedAudio, *, parts: int) -> AudioResult:
        """Store the finished audio; ``parts`` pieces of it were published before."""
        ...

    def publish_part(self, task: Task, *, index: int, data: bytes, fmt: AudioFormat) -> None:
        """Store piece ``index`` of audio still being made, for the job's streams to read."""
        ...

    @property
    def max_parts(self) -> int | None:
        """How many pieces a job's streams can be given one by one (``None``: any number)."""
        ...

    def join_source(self, source: JoinSource, *, index: int) -> bytes:
        """The stored audio of a join task's source number ``index``."""
        ...

    def still_wanted(self, task: Task) -> bool:
        """False once the job was canceled, ran past its deadline, or is on another attempt
        than ``task``'s (retried, or claimed again after its lease ran out): stop between
        pieces."""
        ...

    def publish_voice(self, task: Task, voice: NewVoice) -> str:
        """Write the voice's files; return its id once it is (or will be) registered."""
        ...


class TaskExecutor:
    def __init__(
        self,
        *,
        models: ModelSet,
        io: TaskIO,
        limits: VoiceSettings,
        max_chunk_chars: int,
        max_join_s: float,
        first_chunk_chars: int | None = None,
        stream: StageConfig | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self._models = models
        self._verifier = verifier
        self._io = io
        self._limits = limits
        self._max_chunk_chars = max_chunk_chars
        self._first_chunk_chars = first_chunk_chars or max_chunk_chars
        self._max_join_s = max_join_s
        self._stream_stage = stream or StageConfig.of(WorkerSettings())

    @property
    def modes(self) -> tuple[Mode, ...]:
        return self._models.modes

    def execute(self, task: Task) -> JobOutput:
        request = task.request
        match request:
            case (
                CustomVoiceRequest()
                | VoiceDesignRequest()
                | VoiceCloneRequest()
                | (ClonePromptRequest())
            ):
                return JobOutput(audio=self._speak(task, request))
            case CreateVoiceRequest():
                return self._create_voice(task, request)
            case DesignVoiceRequest():
                return self._design_voice(task, request)
            case NormalizeRequest():
                return JobOutput(audio=self._store(task, self._normalize(request), request.format))
            case JoinRequest():
                return JobOutput(audio=self._join(task, request))
            case CastRequest() | BatchRequest():
                raise SynthesisFailed("a cast or batch parent is bookkeeping; no worker runs it")

    # -- speech -----------------------------------------------------------------------------

    def _speak(self, task: Task, request: SpeechRequest) -> AudioResult:
        """Long text is spoken sentence group by sentence group and joined. A streamed job
        publishes audio as the engine makes it (every few frames), its first chunk one
        sentence alone; a seeded one says its chunks one by one (chunk *i* with ``seed + i``)
        so its audio depends on nothing else queued; any other hands all its chunks to the
        model's batch queue at once, beside other jobs' lines."""
        chunks = (
            split_for_stream(
                request.text,
                max_chars=self._max_chunk_chars,
                first_max_chars=self._first_chunk_chars,
            )
            if request.stream
            else split_text(request.text, max_chars=self._max_chunk_chars)
        )
        synth, voice = self._voice(request)
        lines = [
            Line(
                text=chunk,
                language=request.language,
                voice=voice,
                max_new_tokens=request.max_new_tokens,
            )
            for chunk in chunks
        ]
        if request.stream:
            return self._stream(task, request, synth, voice, lines)
        seeds = [None if request.seed is None else request.seed + i for i in range(len(lines))]
        if request.seed is not None:
            waves = []
            for index, line in enumerate(lines):
                self._check_wanted(task, index, len(lines))
                waves.append(synth.say(line, seed=seeds[index]))
        else:
            waves = [_raised(result) for result in synth.queue.submit(lines)]
            # The lines went to the model together; before the audio is encoded and stored,
            # make sure someone still wants it.
            self._check_wanted(task, len(lines), len(lines))
        checked: _Checked | None = None
        if request.verify and self._verifier is not None:

            def remake(index: int, seed: int) -> Waveform:
                self._check_wanted(task, index + 1, len(lines))
                return synth.say(lines[index], seed=seed)

            checked = self._check(request, voice, lines, waves=waves, seeds=seeds, remake=remake)
            waves = checked.waves
        last = len(waves) - 1
        segments = [
            stretch(joint(wave, first=i == 0, last=i == last), speed=request.speed)
            for i, wave in enumerate(waves)
        ]
        audio = encode(concatenate(segments), fmt=request.format)
        return _with_checks(self._io.store_audio(task, audio, parts=0), checked, request)

    def _check(
        self,
        request: SpeechRequest,
        voice: Voice,
        lines: Sequence[Line],
        *,
        waves: Sequence[Waveform],
        seeds: Sequence[int | None],
        remake: Remake | None,
    ) -> _Checked:
        """Every chunk checked (and, given ``remake``, the failing ones said again), then the
        kept chunks' words aligned. A clone is held to its prompt's speaker embedding; any
        other voice to the job's first chunk."""
        verifier = self._verifier
        assert verifier is not None
        reference = (
            voice.prompt.items[0].ref_spk_embedding.float().numpy()
            if isinstance(voice, Clone)
            else None  # the job's first chunk
        )
        kept, report = verifier.check(
            [
                Chunk(text=line.text, wave=wave, seed=seed)
                for line, wave, seed in zip(lines, waves, seeds, strict=True)
            ],
            language=request.language,
            target_lufs=None,
            reference=reference,
            remake=remake,
        )
        words = verifier.words(kept, texts=[line.text for line in lines], language=request.language)
        return _Checked(waves=kept, report=report, words=words)

    def _stream(
        self,
        task: Task,
        request: SpeechRequest,
        synth: Synthesizer,
        voice: Voice,
        lines: list[Line],
    ) -> AudioResult:
        """The engine (this thread, holding the model's lock) only generates; each piece goes
        to the job's stage (``pipeline.py``), whose thread stretches, encodes and publishes the
        pieces in order, each within a deadline. Checks, where asked, come after the last
        piece (never before the first), and report only: what was heard is not said again."""
        out = _StreamOut(self._io, task, request, lines=len(lines))
        said: list[Waveform] = []
        seeds = [None if request.seed is None else request.seed + i for i in range(len(lines))]
        with Stage(out.take, config=self._stream_stage, name=f"stream {task.id}") as stage:
            for index, line in enumerate(lines):
                self._check_wanted(task, index, len(lines))
                pieces_said: list[Waveform] = []
                with closing(synth.stream(line, seed=seeds[index])) as pieces:
                    for piece in pieces:
                        stage.put(_Piece(line=index, wave=piece))
                        pieces_said.append(piece)
                if not pieces_said:
                    raise SynthesisFailed(f"the model made no audio for chunk {index}")
                said.append(concatenate(pieces_said))
                stage.put(_Mark.LINE_END)
            stage.put(_Mark.ALL_SAID)
            stage.finish()
        checked = None
        if request.verify and self._verifier is not None:
            checked = self._check(request, voice, lines, waves=said, seeds=seeds, remake=None)
        audio = encode(concatenate(out.segments), fmt=request.format)
        stored = self._io.store_audio(task, audio, parts=out.parts)
        return _with_checks(stored, checked, request)

    def _check_wanted(self, task: Task, index: int, total: int) -> None:
        if index and not self._io.still_wanted(task):
            raise JobCanceled(f"job {task.id} was canceled after {index} of {total}")

    def _voice(self, request: SpeechRequest) -> tuple[Synthesizer, Voice]:
        models = self._models
        match request:
            case CustomVoiceRequest():
                speaker = Speaker(name=request.speaker, instruct=request.instruct)
                return models.of_type(ModelType.CUSTOM_VOICE), speaker
            case VoiceDesignRequest():
                return models.of_type(ModelType.VOICE_DESIGN), Design(instruct=request.instruct)
            case VoiceCloneRequest():
                synth = models.of_type(ModelType.BASE)
                # Encode the reference once, not once per chunk of a long text.
                items = synth.create_voice_prompt(
                    reference=self._reference(request.reference),
                    ref_text=request.ref_text,
                    x_vector_only=request.x_vector_only,
                )
                return synth, Clone(prompt=VoicePromptFile(items=items))
            case ClonePromptRequest():
                synth = models.of_type(ModelType.BASE)
                prompt = self._prompt(synth, request.voice_id)
                return synth, Clone(prompt=prompt, voice_id=request.voice_id)

    def _prompt(self, synth: Synthesizer, voice_id: str) -> VoicePromptFile:
        """The voice's prompt file, checked against the model that will speak it before any
        of it reaches the GPU: the registry checked it against what the backends advertised,
        but the file, or the model loaded here, may be another than the one checked."""
        try:
            prompt = self._io.prompt(voice_id)
            check_fits(prompt, synth.facts, frames=max_frames(self._limits.max_reference_s))
        except InvalidVoiceFile as exc:
            raise InvalidVoice(
                f"voice {voice_id} cannot be spoken by {synth.model_source}: {exc.message}",
                field="voice",
                details={"voice_id": voice_id, "reason": exc.reason},
            ) from exc
        return prompt

    def _reference(self, ref: AudioRef) -> Waveform:
        return decode(self._io.reference(ref), max_duration_s=self._limits.max_reference_s)

    def _store(self, task: Task, wave: Waveform, fmt: AudioFormat) -> AudioResult:
        return self._io.store_audio(task, encode(wave, fmt=fmt), parts=0)

    # -- voices -----------------------------------------------------------------------------

    def _create_voice(self, task: Task, request: CreateVoiceRequest) -> JobOutput:
        uploaded = self._io.reference(request.reference)
        items = self._models.of_type(ModelType.BASE).create_voice_prompt(
            reference=decode(uploaded, max_duration_s=self._limits.max_reference_s),
            ref_text=request.ref_text,
            x_vector_only=request.x_vector_only,
        )
        voice = self._new_voice(
            task,
            voice_id=request.voice_id,
            name=request.name,
            traits=request.traits,
            items=items,
            ref_text=request.ref_text,
            reference=Clip(
                data=uploaded,
                extension=request.reference.container.value,
                content_type=CONTENT_TYPES[request.reference.container],
            ),
        )
        return JobOutput(voice_id=self._io.publish_voice(task, voice))

    def _design_voice(self, task: Task, request: DesignVoiceRequest) -> JobOutput:
        """Design a line from the description, then lock that voice as a clone prompt."""
        line = self._models.of_type(ModelType.VOICE_DESIGN).generate_voice_design(
            text=request.text,
            instruct=request.instruct,
            language=request.language,
            seed=request.seed,
        )
        items = self._models.of_type(ModelType.BASE).create_voice_prompt(
            reference=line, ref_text=request.text, x_vector_only=False
        )
        voice = self._new_voice(
            task,
            voice_id=request.voice_id,
            name=request.name,
            traits=request.traits,
            items=items,
            ref_text=request.text,
            reference=_clip(encode(line, fmt=AudioFormat.WAV)),
        )
        voice_id = self._io.publish_voice(task, voice)
        return JobOutput(audio=self._store(task, line, request.format), voice_id=voice_id)

    def _new_voice(
        self,
        task: Task,
        *,
        voice_id: str,
        name: str,
        traits: VoiceTraits,
        items: tuple[PromptItem, ...],
        ref_text: str | None,
        reference: Clip,
    ) -> NewVoice:
        model = self._models.of_type(ModelType.BASE).model_source
        fields = {
            **traits.model_dump(mode="json", exclude_none=True, exclude={"tags"}),
            "tags": ",".join(traits.tags),
            "name": name,
            "owner": task.owner,
            "job_id": task.id,
            **({"ref_text": ref_text} if ref_text else {}),
        }
        prompt = dumps(VoicePromptFile(items=items, metadata={"name": name}, model=model))
        return NewVoice(voice_id=voice_id, prompt=prompt, fields=fields, reference=reference)

    # -- audio ------------------------------------------------------------------------------

    def _join(self, task: Task, request: JoinRequest) -> AudioResult:
        """A batch's items end to end, each read back from its stored file, with the asked
        silence and a short fade at each joint. Lossy items are decoded and encoded again."""
        waves: list[Waveform] = []
        left_s = self._max_join_s
        for index, source in enumerate(request.sources):
            if not self._io.still_wanted(task):
                raise JobCanceled(f"job {task.id} was canceled while joining")
            data = self._io.join_source(source, index=index)
            wave = decode_output(data, fmt=request.format, max_duration_s=left_s)
            left_s -= wave.duration_s + request.gap_ms / 1000
            waves.append(wave)
        if left_s < 0:
            raise SynthesisFailed(f"the joined file would be longer than {self._max_join_s:g} s")
        joined = join_waves(waves, gap_s=request.gap_ms / 1000)
        # Where each item starts in the file as decoded here (a lossy item's decoder may add
        # or trim a few milliseconds against its stored duration): its captions move by it.
        gap_samples = round(request.gap_ms / 1000 * waves[0].sample_rate)
        ends = np.cumsum([len(w.samples) + gap_samples for w in waves[:-1]])
        starts = tuple(float(n) / waves[0].sample_rate for n in (0, *ends))
        stored = self._store(task, joined, request.format)
        return stored.model_copy(update={"starts_s": starts})

    def _normalize(self, request: NormalizeRequest) -> Waveform:
        wave = decode(
            self._io.reference(request.source), max_duration_s=self._limits.max_normalize_s
        )
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
        return result.wave


@dataclass(frozen=True, kw_only=True)
class _Checked:
    waves: list[Waveform]
    """The audio kept, chunk by chunk."""
    report: VerifyReport
    words: list[tuple[WordTiming, ...]]
    """Each kept chunk's words, in the chunk's own time."""


def _with_checks(
    result: AudioResult, checked: _Checked | None, request: SpeechRequest
) -> AudioResult:
    """``result`` with its report and its words placed in the whole: each chunk starts after
    the ones before it and their pauses (``joint``), all stretched to the asked speed."""
    if checked is None:
        return result
    # A chunk's place in the whole is its length plus the pause ``joint`` puts after all but
    # the last; derived from the lengths, not by joining the audio a second time.
    spans = [wave.duration_s + JOINT_GAP_S for wave in checked.waves[:-1]]
    starts = [start / request.speed for start in itertools.accumulate(spans, initial=0.0)]
    words = place_words(
        checked.words, starts_s=starts, scale=1 / request.speed, duration_s=result.duration_s
    )
    return result.model_copy(update={"verification": checked.report, "words": words})


def _raised(result: Spoken) -> Waveform:
    """A batched line's own audio, or its own error: one bad line fails only its job."""
    if isinstance(result, GatewayError):
        raise result
    return result


def _clip(audio: EncodedAudio) -> Clip:
    return Clip(data=audio.data, extension=audio.extension, content_type=audio.content_type)


@dataclass(frozen=True, slots=True)
class _Piece:
    line: int
    wave: Waveform


class _Mark(Enum):
    LINE_END = "the line's last piece has come"
    ALL_SAID = "the job's last line has ended"


class _StreamOut:
    """What becomes of a streamed job's pieces, in the order the engine made them (on the job's
    stage thread): each line's edges faded (``StreamedClip``), stretched to the asked pace,
    encoded as one stream and published."""

    def __init__(self, io: TaskIO, task: Task, request: SpeechRequest, *, lines: int) -> None:
        self._pieces = _Pieces(io, task, request.format)
        self._speed = request.speed
        self._lines = lines
        self._clip: StreamedClip | None = None
        # A sentence's faded last 10 ms and the pause after it go out with the next sentence's
        # first piece: one part per engine piece, not an extra one per sentence.
        self._carried: list[Waveform] = []
        self.segments: list[Waveform] = []
        """Everything published, as stretched: the finished audio is these, encoded whole."""
        self.parts = 0
        """Parts published, once all is said."""

    def take(self, item: _Piece | _Mark) -> None:
        match item:
            case _Piece(line=line, wave=wave):
                self._clip = self._clip or StreamedClip(
                    first=line == 0, last=line == self._lines - 1, sample_rate=wave.sample_rate
                )
                self._add(self._clip.feed(wave))
            case _Mark.LINE_END:
                assert self._clip is not None, "a line ended before its first piece"
                self._carried.append(self._clip.finish())
                self._clip = None
            case _Mark.ALL_SAID:
                self._add(concatenate(self._carried))
                self.parts = self._pieces.finish()

    def _add(self, wave: Waveform) -> None:
        if wave.samples.size:
            segment = stretch(concatenate([*self._carried, wave]), speed=self._speed)
            self._carried.clear()
            self.segments.append(segment)
            self._pieces.add(segment)


GROWN_PIECE_S = 8.0
"""Where parts are counted, the longest a held piece grows (see ``_Pieces``)."""


class _Pieces:
    """A streamed job's audio, encoded as one continuous stream and published piece by piece.

    Where the parts a job's streams can be given are counted (``TaskIO.max_parts``: RunPod's
    worker has a signed URL for each, and puts what comes after the last into it at the end),
    the first piece goes as it comes and each later one is held until it is twice as long as
    the one before, up to ``GROWN_PIECE_S``: 16 parts then carry some 90 s of audio as it is
    made, not 16 engine pieces of 0.64 s. Played from the start, the growing pieces stay ahead
    of the listener whenever the engine is faster than real time. Elsewhere every engine piece
    goes at once."""

    def __init__(self, io: TaskIO, task: Task, fmt: AudioFormat) -> None:
        self._io = io
        self._task = task
        self._fmt = fmt
        self._encoder: StreamEncoder | None = None
        self._counted = io.max_parts is not None
        self._held = bytearray()
        self._held_s = 0.0
        self._next_s = 0.0
        """How long the held audio must be to go out (0: at once)."""
        self._published = 0

    def add(self, wave: Waveform) -> None:
        if self._encoder is None:
            self._encoder = StreamEncoder(self._fmt, sample_rate=wave.sample_rate)
        self._held += self._encoder.feed(wave)
        self._held_s += wave.duration_s
        if self._held_s >= self._next_s:
            self._publish()

    def finish(self) -> int:
        """Flush the encoder; the number of pieces published."""
        if self._encoder is not None:
            self._held += self._encoder.finish()
        self._publish()
        return self._published

    def _publish(self) -> None:
        if not self._held:
            return  # the encoder is still holding samples back for its next frame
        data = bytes(self._held)
        self._io.publish_part(self._task, index=self._published, data=data, fmt=self._fmt)
        self._published += 1
        if self._counted:
            self._next_s = min(2 * self._held_s, GROWN_PIECE_S)
        self._held.clear()
        self._held_s = 0.0
