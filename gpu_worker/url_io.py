"""Task inputs and outputs for a worker outside the project (RunPod): signed URLs only.

The worker never sees a Google credential. It reads and writes exactly the objects the
dispatcher signed for this task; a new voice is registered by the storage event its ``.pt``
upload fires, as any dropped file is.
"""

from __future__ import annotations

import json

import requests

from gpu_worker.audio.encoding import EncodedAudio
from gpu_worker.prompt_cache import PromptCache
from gpu_worker.tasks import NewVoice, Task
from shared.domain.audio_formats import FORMATS, AudioFormat
from shared.domain.errors import BackendUnavailable, PayloadTooLarge, SynthesisFailed
from shared.domain.jobs import AudioResult
from shared.domain.synthesis import AudioRef, JoinSource
from shared.domain.voice_file import VoicePromptFile, loads
from shared.wire.runpod_io import RunPodInput

TIMEOUT_S = 60.0
_CHUNK = 1 << 16


class SignedUrlIO:
    def __init__(
        self,
        task_input: RunPodInput,
        *,
        session: requests.Session,
        prompts: PromptCache,
        max_audio_bytes: int,
        max_prompt_bytes: int,
    ) -> None:
        self._input = task_input
        self._session = session
        self._prompts = prompts
        self._max_audio_bytes = max_audio_bytes
        self._max_prompt_bytes = max_prompt_bytes
        self._parts_published = 0
        self._overflow = bytearray()
        """Pieces past the last signed part URL, written there when the audio is finished."""

    def reference(self, ref: AudioRef) -> bytes:
        return self._download(self._url("reference"), limit=self._max_audio_bytes)

    def join_source(self, source: JoinSource, *, index: int) -> bytes:
        urls = self._input.urls.sources
        if index >= len(urls):
            raise SynthesisFailed(f"the dispatcher signed no URL for join source {index}")
        return self._download(urls[index], limit=source.bytes)

    def prompt(self, voice_id: str) -> VoicePromptFile:
        url = self._url("prompt")
        generation = self._input.prompt_generation
        if generation is None:
            return loads(self._download(url, limit=self._max_prompt_bytes))
        return self._prompts.fetch(
            f"voice:{voice_id}",
            generation=generation,
            download=lambda: self._download(url, limit=self._max_prompt_bytes),
        )

    def store_audio(self, task: Task, audio: EncodedAudio, *, parts: int) -> AudioResult:
        if self._input.audio_uri is None:
            raise SynthesisFailed("the dispatcher gave no place for the audio")
        urls = self._input.urls.parts
        if self._overflow:
            self._upload(urls[-1], bytes(self._overflow), content_type=audio.content_type)
            self._overflow.clear()
        self._upload(self._url("audio"), audio.data, content_type=audio.content_type)
        return AudioResult(
            uri=self._input.audio_uri,
            format=audio.format,
            content_type=audio.content_type,
            sample_rate=audio.sample_rate,
            duration_s=audio.duration_s,
            bytes=len(audio.data),
            parts=min(parts, len(urls)),
        )

    def still_wanted(self, task: Task) -> bool:
        # No Google credentials here to read the job: a canceled RunPod job is stopped through
        # RunPod's own /cancel by the monitor, and its result is refused if it arrives anyway.
        return True

    @property
    def max_parts(self) -> int | None:
        return len(self._input.urls.parts)  # one signed URL each; the last takes the rest

    def publish_part(self, task: Task, *, index: int, data: bytes, fmt: AudioFormat) -> None:
        urls = self._input.urls.parts
        if not urls:
            return  # nothing signed for pieces: streams get the whole audio when it is done
        if index < len(urls) - 1:
            self._upload(urls[index], data, content_type=FORMATS[fmt].content_type)
        else:
            self._overflow += data

    def publish_voice(self, task: Task, voice: NewVoice) -> str:
        ref = voice.reference
        self._upload(self._url("voice_reference"), ref.data, content_type=ref.content_type)
        fields = dict(voice.fields)
        if self._input.voice_reference_path:
            fields["reference_path"] = self._input.voice_reference_path
        # The sidecar goes first: the prompt's storage event reads it when it registers.
        # Not "application/json": the storage emulator takes a signed PUT of that type for a
        # metadata request and drops the connection. The registry parses the body as JSON
        # whatever its type says.
        self._upload(
            self._url("voice_sidecar"),
            json.dumps(fields).encode(),
            content_type="application/octet-stream",
        )
        self._upload(
            self._url("voice_prompt"), voice.prompt, content_type="application/octet-stream"
        )
        return voice.voice_id

    # -- transfers --------------------------------------------------------------------------

    def _url(self, name: str) -> str:
        url = getattr(self._input.urls, name)
        if not url:
            raise SynthesisFailed(f"the dispatcher signed no {name} URL for this task")
        assert isinstance(url, str)
        return url

    def _download(self, url: str, *, limit: int) -> bytes:
        try:
            with self._session.get(url, stream=True, timeout=TIMEOUT_S) as response:
                self._check(response, "download")
                data = bytearray()
                for chunk in response.iter_content(_CHUNK):
                    data += chunk
                    if len(data) > limit:
                        raise PayloadTooLarge(f"a download exceeded {limit} bytes")
                return bytes(data)
        except requests.RequestException as exc:
            raise BackendUnavailable(f"download failed: {type(exc).__name__}") from exc

    def _upload(self, url: str, data: bytes, *, content_type: str) -> None:
        try:
            response = self._session.put(
                url, data=data, headers={"Content-Type": content_type}, timeout=TIMEOUT_S
            )
        except requests.RequestException as exc:
            raise BackendUnavailable(f"upload failed: {type(exc).__name__}") from exc
        self._check(response, "upload")

    @staticmethod
    def _check(response: requests.Response, what: str) -> None:
        if response.status_code >= 500 or response.status_code == 429:
            raise BackendUnavailable(f"storage {what} answered {response.status_code}")
        if response.status_code >= 400:
            # An expired or wrong signature: this attempt cannot succeed; the job is
            # re-dispatched with fresh URLs if it is retried.
            raise SynthesisFailed(f"storage {what} refused: HTTP {response.status_code}")
