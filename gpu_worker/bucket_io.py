"""Task inputs and outputs for a worker inside the project (the 4090): the bucket, the
registry and a prompt cache, through the gateway's ports."""

from __future__ import annotations

import json
import logging

from gpu_worker.audio.encoding import EncodedAudio
from gpu_worker.prompt_cache import PromptCache
from gpu_worker.tasks import NewVoice, Task
from shared.adapters import tracing
from shared.adapters.ttl_cache import TtlCache
from shared.domain.audio_formats import (
    FORMATS,
    AudioFormat,
    audio_object_name,
    part_object_name,
)
from shared.domain.errors import InvalidVoice, NotFound, SynthesisFailed, TransientError
from shared.domain.jobs import AudioResult
from shared.domain.synthesis import AudioRef, JoinSource
from shared.domain.voice_file import VoicePromptFile
from shared.domain.voices import PROMPT_SUFFIX, REFERENCE_SUFFIX, SIDECAR_SUFFIX, voice_id_for
from shared.usecases import completion
from shared.usecases.gateway import Gateway
from shared.usecases.registry import Registration, StoredObject, on_object_finalized

log = logging.getLogger(__name__)


_ANNOUNCED_RUNS = 256
"""Runs whose last announcement time is kept (for the interval between announcements): far
more than one worker streams at once; the oldest is forgotten first."""


class BucketIO:
    def __init__(self, *, gateway: Gateway, prompts: PromptCache) -> None:
        self._gw = gateway
        self._prompts = prompts
        self._announced: TtlCache[tuple[str, int], bool] = TtlCache(
            ttl_s=gateway.settings.worker.stream_announce_interval_s,
            max_entries=_ANNOUNCED_RUNS,
            monotonic=lambda: gateway.clock().timestamp(),
        )
        """The streaming runs, by (job, attempt), that announced within the interval."""

    def reference(self, ref: AudioRef) -> bytes:
        try:
            return self._gw.blobs.get(ref.path, max_bytes=self._gw.settings.voices.max_audio_bytes)
        except NotFound as exc:
            raise SynthesisFailed(f"the uploaded audio is gone: {ref.path}") from exc

    def join_source(self, source: JoinSource, *, index: int) -> bytes:
        try:
            return self._gw.blobs.get(source.path, max_bytes=source.bytes)
        except NotFound as exc:
            raise SynthesisFailed(f"an item's audio is gone: {source.path}") from exc

    def prompt(self, voice_id: str) -> VoicePromptFile:
        voice = self._gw.voices.get(voice_id)
        if voice is None or not voice.active:
            # Deleted or quarantined since the job was accepted: the caller's voice is at
            # fault, not the synthesis (the job fails with a 4xx naming the voice).
            state = "unknown" if voice is None else voice.state.value
            raise InvalidVoice(
                f"voice {voice_id} is {state}", field="voice", details={"voice_id": voice_id}
            )
        limit = self._gw.settings.voices.max_prompt_bytes
        return self._prompts.fetch(
            voice.object_name,
            generation=voice.generation,
            download=lambda: self._gw.blobs.get(voice.object_name, max_bytes=limit),
        )

    @tracing.traced("job upload")
    def store_audio(self, task: Task, audio: EncodedAudio, *, parts: int) -> AudioResult:
        task.wait_claimed()
        path = audio_object_name(
            prefix=self._gw.settings.audio_prefix,
            job_id=task.id,
            attempt=task.attempt,
            fmt=audio.format,
        )
        stored = self._gw.blobs.put(path, audio.data, content_type=audio.content_type)
        self._announced.forget((task.id, task.attempt))  # its pieces are all out
        return AudioResult(
            uri=stored.uri,
            format=audio.format,
            content_type=audio.content_type,
            sample_rate=audio.sample_rate,
            duration_s=audio.duration_s,
            bytes=stored.size,
            parts=parts,
        )

    def still_wanted(self, task: Task) -> bool:
        task.wait_claimed()
        job = self._gw.jobs.get(task.id)
        if job is None or not job.wanted(attempt=task.attempt):
            return False
        if job.overdue(self._gw.clock()):
            completion.cancel_overdue(self._gw, task.id)
            return False
        return True

    def publish_part(self, task: Task, *, index: int, data: bytes, fmt: AudioFormat) -> None:
        task.wait_claimed()  # the first piece may be made before the claim has committed
        path = part_object_name(
            prefix=self._gw.settings.audio_prefix,
            job_id=task.id,
            attempt=task.attempt,
            index=index,
            fmt=fmt,
        )
        self._gw.blobs.put(path, data, content_type=FORMATS[fmt].content_type)
        self._announce(task, parts=index + 1)
        if index == 0 and task.created_at is not None:
            # A streamed job's first audio is there for the caller: the time-to-first-audio
            # log-based metric (an unstreamed job's is its "job ended" line's).
            log.info(
                "first audio",
                extra={
                    "job_id": task.id,
                    "mode": task.request.mode.value,
                    "backend": self._gw.settings.worker.backend_id,
                    "ttfa_s": round((self._gw.clock() - task.created_at).total_seconds(), 3),
                },
            )

    @property
    def max_parts(self) -> int | None:
        return None  # an object per piece, as many as come

    def _announce(self, task: Task, *, parts: int) -> None:
        """Tell the job's document how many pieces this run has published, so a stream that
        listens to it reads the new piece at once (see ``stream_announce_interval_s`` for how
        often). Best effort: a stream finds every piece by looking anyway, so a failed
        announcement only costs it a fallback interval, and never fails the job."""
        run = (task.id, task.attempt)
        if parts > 1 and self._announced.get(run)[0]:
            return  # the first piece always goes: it is the one a caller waits on
        self._announced.put(run, True)
        try:
            self._gw.jobs.announce_parts(task.id, attempt=task.attempt, parts=parts)
        except (NotFound, TransientError) as exc:
            log.warning(
                "pieces not announced",
                extra={"job_id": task.id, "attempt": task.attempt, "parts": parts,
                       "error": exc.code},
            )  # fmt: skip

    def publish_voice(self, task: Task, voice: NewVoice) -> str:
        """Write reference, sidecar and prompt, then register without waiting for the event.

        The storage event for the same generation arrives later and finds it registered.
        """
        task.wait_claimed()
        gw = self._gw
        stem = f"{gw.settings.voices.prefix}{task.id}"
        ref = voice.reference
        fields = {**voice.fields, "reference_path": f"{stem}{REFERENCE_SUFFIX}.{ref.extension}"}
        gw.blobs.put(fields["reference_path"], ref.data, content_type=ref.content_type)
        gw.blobs.put(
            f"{stem}{SIDECAR_SUFFIX}", json.dumps(fields).encode(), content_type="application/json"
        )
        name = f"{stem}{PROMPT_SUFFIX}"
        stored = gw.blobs.put(name, voice.prompt, content_type="application/octet-stream")
        outcome = on_object_finalized(
            gw,
            StoredObject(
                bucket=gw.settings.voices_bucket,
                name=name,
                generation=stored.generation or 0,
                size=stored.size,
                metadata=fields,
            ),
            data=voice.prompt,
        )
        if outcome is Registration.QUARANTINED:
            raise SynthesisFailed("the prompt this worker built failed validation")
        return voice_id_for(bucket=gw.settings.voices_bucket, object_name=name)
