"""One typed Settings object, read from the environment once per process at bootstrap.

Nothing else in the code reads ``os.environ``. Variables are prefixed ``TTS_``; nested groups use
``__`` (``TTS_WORKER__MODEL``). The Google emulator hosts keep their standard names because the
client libraries read them too.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.domain.backends import BackendConfig, BackendKind
from shared.domain.catalog import BUILTIN_SPEAKERS

DEFAULT_MODEL = "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice"

OPENAI_VOICES: dict[str, str] = {
    "alloy": "Serena",
    "ash": "Aiden",
    "ballad": "Ryan",
    "coral": "Vivian",
    "echo": "Aiden",
    "fable": "Ryan",
    "nova": "Vivian",
    "onyx": "Ryan",
    "sage": "Serena",
    "shimmer": "Vivian",
    "verse": "Aiden",
    "marin": "Serena",
    "cedar": "Ryan",
}
"""OpenAI's voices, each onto the built-in speaker nearest in register (English-speaking first)."""


class ApiSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0, le=32 * 1024 * 1024)
    """Room for a base64 reference clip; Cloud Functions caps requests at 32 MB."""
    max_text_chars: int = Field(default=5_000, gt=0, le=100_000)
    signed_url_ttl_s: int = Field(default=900, gt=0, le=3600)
    """Signed URLs live at most an hour: a leaked one is useless soon after."""
    publish_attempts: int = Field(default=3, ge=1, le=10)
    backend_cache_ttl_s: float = Field(default=2.0, ge=0)
    """How long a process routes on backend documents it has read (0: read every time)."""
    key_cache_ttl_s: float = Field(default=30.0, ge=0)
    """How long a verified API key is trusted before it is read again (revocation delay)."""
    cache_entry_ttl_s: float = Field(default=300.0, ge=0)
    """How long a process reuses an audio-cache entry it has read (0: read every time). An
    entry only changes when its key's audio is made again, and either audio answers the key."""
    cache_entries_max: int = Field(default=4096, gt=0)
    """Audio-cache entries one process keeps (a few hundred bytes each), least used first out."""
    beside_threads: int = Field(default=4, gt=0, le=64)
    """Threads per process for work beside a request (a cache hit's audio read while its job
    is written, its announcement after the answer)."""
    beside_max_pending: int = Field(default=256, gt=0)
    """Tasks handed to those threads and not yet done; past it the request does them itself."""
    max_wait_s: float = Field(default=120.0, gt=0, le=3600)
    """The longest a synchronous call (``/v1/audio/speech``, ``Prefer: wait``) or a stream waits
    for its job; past it the caller gets ``202`` and the job. Keep it under the function's
    request timeout."""
    poll_initial_s: float = Field(default=0.1, gt=0)
    poll_max_s: float = Field(default=1.0, gt=0)
    """A waiting call reads the job every ``poll_initial_s`` at first, doubling up to this;
    every new piece of audio starts it over."""
    voice_aliases: dict[str, str] = Field(default_factory=lambda: dict(OPENAI_VOICES))
    """OpenAI's voice names onto built-in speakers, for clients that only know those."""
    max_batch_items: int = Field(default=500, gt=0, le=1000)
    """Items one batch may have (each is a job; the manifest reads each one)."""
    speech_models: tuple[str, ...] = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "qwen3-tts")
    """Names ``/v1/audio/speech`` accepts for ``model`` besides the model ids workers load."""

    @model_validator(mode="after")
    def _aliases_name_speakers(self) -> ApiSettings:
        unknown = sorted(set(self.voice_aliases.values()) - set(BUILTIN_SPEAKERS))
        if unknown:
            raise ValueError(f"voice_aliases map onto unknown speakers: {unknown}")
        return self


class VoiceSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket: str = ""
    """The bucket voice files (``prefix`` and ``quarantine_prefix``) live in; empty: the main
    bucket. Deployed, a bucket of their own (``infra/topology.yaml``, ``voices_bucket``): storage
    triggers filter by bucket only, so only voice files wake the voice-registry functions."""
    prefix: str = "voice-prompts/"
    """Where prompt files live; a ``.pt`` finalized here is validated and registered."""
    quarantine_prefix: str = "quarantine/"
    upload_prefix: str = "uploads/"
    max_prompt_bytes: int = Field(default=16 * 1024 * 1024, gt=0, le=64 * 1024 * 1024)
    max_sidecar_bytes: int = Field(default=64 * 1024, gt=0)
    max_audio_bytes: int = Field(default=10 * 1024 * 1024, gt=0, le=32 * 1024 * 1024)
    """Uploaded audio: reference clips and clips to normalise."""
    max_reference_s: float = Field(default=60.0, gt=0, le=600)
    max_normalize_s: float = Field(default=1800.0, gt=0)
    max_list: int = Field(default=5000, gt=0)
    """Most voices one listing query reads before filtering and paging."""
    max_cast_items: int = Field(default=20, gt=0, le=100)


class RunPodSettings(BaseModel):
    """The RunPod endpoint the dispatcher submits to. Empty ``endpoint_id``: RunPod is off."""

    model_config = ConfigDict(frozen=True)

    backend_id: str = "runpod"
    endpoint_id: str = ""
    api_key: SecretStr = SecretStr("")
    base_url: str = "https://api.runpod.ai/v2"
    webhook_url: str = ""
    """The deployed ``tts-runpod-webhook`` function's URL."""
    webhook_secret: SecretStr = SecretStr("")
    """Signs each job's webhook token (HMAC); never sent to RunPod itself."""
    execution_timeout_s: int = Field(default=600, gt=0, le=24 * 3600)
    ttl_s: int = Field(default=3000, gt=0, le=3600)
    """Within the signed URLs' hour: RunPod drops a job before its URLs could expire."""
    request_timeout_s: float = Field(default=10.0, gt=0)
    attempts: int = Field(default=4, ge=1, le=10)
    """HTTP attempts per call (429 / 5xx / timeouts back off exponentially)."""
    call_budget_s: float = Field(default=40.0, gt=0, le=300)
    """Seconds one call may take, retries and back-off included: below the dispatch
    subscription's 60 s ack deadline, so a slow RunPod never outlives its Pub/Sub message."""
    max_attempts: int = Field(default=3, ge=1, le=10)
    """Dispatches a job may have before it fails with RunPod's error."""
    stream_parts: int = Field(default=16, ge=1, le=256)
    """Part URLs signed for a streamed job (each costs an IAM signBlob call at dispatch); a
    worker that makes more pieces puts the rest into the last part."""

    @model_validator(mode="after")
    def _urls_outlive_the_job(self) -> RunPodSettings:
        # The task's signed URLs live at most an hour (a leaked one dies soon); RunPod must drop
        # the job before they could expire under it.
        if self.ttl_s + self.execution_timeout_s > 3600:
            raise ValueError("runpod ttl_s + execution_timeout_s must not exceed 3600")
        if self.request_timeout_s > self.call_budget_s:
            raise ValueError("runpod request_timeout_s must not exceed call_budget_s")
        return self


class WebhookSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    signing_key: SecretStr = SecretStr("")
    """Derives each owner's signing secret (Secret Manager); empty: webhooks are off."""
    allow_private: bool = False
    """Let webhooks call loopback and private addresses: the local stack only."""
    allow_http: bool = False
    """Let webhooks use plain http: the local stack only."""
    timeout_s: float = Field(default=5.0, gt=0, le=30)
    """One delivery's whole time: resolving, connecting, the TLS handshake, sending and reading
    the answer's status. Past it the delivery has failed (and is tried again later), however
    busily the receiver trickles bytes."""


class IntakeSettings(BaseModel):
    """Signed Pub/Sub intake (shared/usecases/intake.py, contracts/intake-signing.md)."""

    model_config = ConfigDict(frozen=True)

    signing_key: SecretStr = SecretStr("")
    """Derives each API key's intake signing secret (Secret Manager); empty: v2 messages are
    retried, never accepted, until it is set."""
    window_s: int = Field(default=300, ge=30, le=24 * 3600)
    """A v2 message must be published within this many seconds of its signed timestamp (either
    way, for clock skew); Pub/Sub's publish time is the reference, so redeliveries and retries
    never go stale. Its signature is remembered for twice as long, to refuse copies."""
    accept_legacy: bool = True
    """Also accept the deprecated body-only signature (v1), logged as deprecated; it goes in
    the next release. Turn it off once every pipeline signs v2: until then a copy of the key
    store can sign v1 messages."""


class TracingSettings(BaseModel):
    """One trace per job, API to worker (``shared/adapters/tracing.py``)."""

    model_config = ConfigDict(frozen=True)

    exporter: Literal["none", "gcp", "console"] = "none"
    """``gcp``: Cloud Trace (deployed; Terraform sets it); ``console``: spans printed, for local
    debugging; ``none``: nothing recorded or exported."""
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of traces recorded where one starts without an incoming ``traceparent``."""


class RetentionSettings(BaseModel):
    """How long what the gateway keeps is kept. Job and event documents carry ``expires_at``,
    which Firestore's TTL policy deletes by; audio goes by the bucket's lifecycle rule on
    ``audio/`` (``infra/topology.yaml``), which must say the same number of days."""

    model_config = ConfigDict(frozen=True)

    job_days: int = Field(default=30, ge=1, le=3650)
    audio_days: int = Field(default=30, ge=1, le=3650)
    event_days: int = Field(default=7, ge=1, le=3650)


class MonitorSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    stale_after_s: float = Field(default=45.0, gt=0)
    """A backend whose heartbeat is older than this is offline (default: three beats)."""
    requeue_after_s: float = Field(default=120.0, gt=0)
    """A job queued this long without being claimed is published again."""
    webhook_grace_s: float = Field(default=60.0, gt=0)
    """A RunPod job silent this long past its expected finish is polled."""
    batch: int = Field(default=200, gt=0)
    """Jobs one page of a sweep reads."""
    pages: int = Field(default=5, gt=0)
    """Pages one sweep reads per pass at most: each starts after the last job of the one before,
    so jobs a sweep cannot act on this time never hide the ones behind them."""
    announce_grace_s: float = Field(default=30.0, ge=0)
    """A finished job's result still unpublished this long after it ended is published by the
    monitor (its own publisher died, or the publish failed)."""
    reply_attempts: int = Field(default=5, gt=0)
    """Times a job's own reply topic is tried (about one a pass) before it is given up: logged,
    and recorded on the job as ``reply_error``. The results topic never waits on it."""


class EngineKind(StrEnum):
    """Which implementation runs the model (the worker README says which to pick on which card)."""

    QWEN = "qwen"
    """qwen-tts itself: any device; batches in one list call; streams every ``stream_frames``
    frames, heard from its own generation."""
    FASTER = "faster"
    """faster-qwen3-tts: CUDA graphs, streams every ``stream_frames`` frames; one item at a time."""
    BATCHED = "batched"
    """faster-qwen3-tts-batch over ``faster``: up to ``batch_size`` lines in one batched decode
    loop (CUDA graphs of ``batch_size`` rows); lines alone and streams as ``faster``."""


class WithoutCuda(StrEnum):
    """What the ``faster`` (and ``batched``) engine does on a machine (or device setting)
    without CUDA."""

    FAIL = "fail"
    """Refuse to start, naming the settings: the default, so a misconfigured GPU host is loud."""
    BASELINE = "baseline"
    """Run the ``qwen`` engine instead, with a warning."""
    EAGER = "eager"
    """Run faster-qwen3-tts's own decode loop with its CUDA graphs called eagerly: slower than
    the baseline, for tests and development on a CPU only."""


class VerifySettings(BaseModel):
    """The checks a worker runs on each chunk of a job that asks for them (``verify``), their
    bounds, and the models that listen. A chunk outside a bound is said again with the next
    seed, at most ``max_attempts`` times in all; if none passes, the best is kept."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(default=3, ge=1, le=10)
    asr_model: str = ""
    """The ASR model for intelligibility (``Qwen/Qwen3-ASR-0.6B`` or a local directory; ``make
    run MODEL=tiny`` sets an offline tiny one); empty: not measured."""
    aligner_model: str = ""
    """The forced aligner for word timings (``Qwen/Qwen3-ForcedAligner-0.6B`` or a local
    directory); empty: no word timings."""
    min_s_per_char: float = Field(default=0.03, gt=0)
    """Seconds per letter or digit of alphabetic text: speech runs at about 0.07."""
    max_s_per_char: float = Field(default=0.25, gt=0)
    min_s_per_char_cjk: float = Field(default=0.08, gt=0)
    """Seconds per character of Chinese, Japanese or Korean text: speech runs at about 0.2."""
    max_s_per_char_cjk: float = Field(default=0.7, gt=0)
    silence_floor_db: float = Field(default=-50.0, le=0)
    """A 20 ms frame quieter than this (dBFS RMS) is silence."""
    max_silence_s: float = Field(default=1.5, gt=0)
    """The longest silence at a chunk's edges or inside it; a pause between sentences is
    well under a second."""
    max_clipped: float = Field(default=0.001, ge=0, le=1)
    """The share of samples at full scale."""
    target_lufs: float = -18.0
    """The loudness a chunk is held to when its job asks for none."""
    max_loudness_off_db: float = Field(default=9.0, gt=0)
    max_repeat_s: float = Field(default=1.0, gt=0)
    """The longest block of frames that may repeat an earlier one."""
    repetition_similarity: float = Field(default=0.95, gt=0, le=1)
    """How alike two frames' spectral shapes must be (cosine) to count as a repeat."""
    repetition_min_lag_s: float = Field(default=0.2, gt=0)
    """Frames this close are neighbours, not repeats (a held vowel)."""
    max_cer: float = Field(default=0.25, ge=0)
    """Character error rate of the ASR transcript against the text, after normalisation."""
    min_similarity: float = Field(default=0.5, ge=-1, le=1)
    """Cosine similarity of a chunk's speaker embedding to the voice's reference."""


class WorkerSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    backend_id: str = "home-4090"
    worker_id: str = "home-4090-1"
    subscription: str = "tts-jobs-home-4090"
    models: tuple[str, ...] = Field(default=(DEFAULT_MODEL,), min_length=1, max_length=3)
    """Hugging Face ids or local directories, at most one per model type (custom_voice,
    voice_design, base); the modes the worker offers follow from the types loaded."""
    device: str = "auto"
    """``auto`` picks ``cuda:0`` when present, else ``cpu``."""
    dtype: str = "auto"
    """``auto``: bfloat16 on CUDA, float32 on CPU."""
    lease_s: float = Field(default=120.0, gt=1)
    heartbeat_s: float = Field(default=15.0, gt=0)
    shutdown_grace_s: float = Field(default=300.0, gt=0)
    max_new_tokens: int = Field(default=2048, gt=0)
    max_chunk_chars: int = Field(default=300, ge=20, le=5000)
    """Longer text is split at sentence boundaries and synthesized chunk by chunk."""
    first_chunk_chars: int = Field(default=120, ge=10, le=5000)
    """A streamed job's first chunk is its first sentence alone, cut at a clause or word to
    this length if longer: its first audio waits for one short sentence, not a whole chunk."""
    prompt_cache_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    """Voice prompts kept in memory, keyed by GCS generation."""
    max_attempts: int = Field(default=3, ge=1, le=10)
    """Transient failures a job may have on this backend before it fails for good."""
    max_join_s: float = Field(default=3 * 3600, gt=0, le=12 * 3600)
    """The longest joined batch file a worker makes: the whole of it is held in memory
    (about 100 kB a second as float samples)."""
    engine: EngineKind = EngineKind.QWEN
    without_cuda: WithoutCuda = WithoutCuda.FAIL
    """For ``engine=faster`` where CUDA is absent (or ``device`` is not a CUDA device)."""
    stream_frames: int = Field(default=8, ge=1, le=250)
    """Codec frames (12.5 a second) per streamed piece, on every engine: 8 is 0.64 s."""
    stream_upload_deadline_s: float = Field(default=30.0, gt=0, le=600)
    """The longest a streamed piece's stretch, encode and upload may take; past it the job
    fails as transient (released) and the stuck upload is abandoned: the engine never waits
    on it."""
    stream_queue_pieces: int = Field(default=32, ge=1, le=4096)
    """Streamed pieces a job's upload stage may fall behind the engine; past that the engine
    waits for it (under its lock, within the deadline)."""
    stream_announce_interval_s: float = Field(default=1.0, ge=0, le=60)
    """The shortest time between two announcements of a streamed job's published pieces on its
    document (``parts_published``, what wakes its streams): Firestore sustains about one write
    a second to one document, and the job's lease renewals and finish write it too. A job's
    first piece is announced at once; a later one that comes sooner is found by the stream's
    own fallback look, and counted by the next announcement. 0 announces every piece."""
    stream_pipeline: bool = True
    """False stretches, encodes and uploads each piece inline, under the engine's lock, with
    no deadline: the old way, kept to compare against (``bench/engine.py``)."""
    max_seq_len: int = Field(default=3072, ge=64, le=32768)
    """The ``faster`` engine's static KV cache, in tokens: a prompt plus its token budget must
    fit, else the item fails with ``prompt_too_long`` (the library would cut it silently). The
    worker refuses to start unless the longest voice prompt (``max_prompt_tokens``), the
    longest chunk (``max_chunk_chars``) and that chunk's token budget fit together."""
    max_prompt_tokens: int = Field(default=1100, ge=16, le=32768)
    """The longest voice prompt either engine speaks, in tokens: its reference code frames
    (12.5 a second) plus, in-context, its reference text's tokens. A longer one fails its job
    with ``prompt_too_long`` naming the voice, before it reaches the model. The worker refuses
    to start unless a prompt made from the longest reference (``voices.max_reference_s``) fits."""
    batch_size: int = Field(default=4, ge=1, le=64)
    """Utterances synthesized in one call: queued jobs of the same model and mode, or one long
    job's sentence chunks. Also how many jobs the subscriber holds at once, and how many a
    RunPod worker takes at once (the SDK's ``concurrency_modifier``)."""
    batch_window_s: float = Field(default=0.02, ge=0, le=5)
    """How long the first utterance waits for others to join its batch."""
    verify: VerifySettings = VerifySettings()
    cloud_logging: bool = False
    """Also send the worker's log lines to Cloud Logging (log ``tts-home-worker``): the home
    worker's "job ended", "first audio" and "job claimed" lines feed the log-based metrics."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TTS_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    project_id: str = Field(
        default="local-project",
        validation_alias=AliasChoices("TTS_PROJECT_ID", "GOOGLE_CLOUD_PROJECT"),
    )
    bucket: str = "tts-gateway-local"
    audio_prefix: str = "audio/"
    jobs_topic: str = "tts-jobs"
    results_topic: str = "tts-results"
    """Every job that ends publishes its result here, at least once: subscribers dedupe on
    ``announcement_id`` (contracts/schemas/job-result)."""
    reply_topics: tuple[str, ...] = ()
    """The topics this deployment may publish replies to (Terraform grants exactly these): the
    most an admin may record on a key. Which of them a request may name is its key's own list
    (``python -m functions.keys reply-topics``)."""
    intake_dead_letter_topic: str = "tts-intake-dead-letter"
    """Intake messages that can never become a job, kept with the reason attached."""
    collection_prefix: str = ""
    """Prefixes every Firestore collection; lets tests share one emulator without clashing."""
    keys_database: str = "(default)"
    """The Firestore database of API keys and intake signatures. Deployed, one of their own
    (``tts-keys``, ``infra/topology.yaml``): the home worker's account is granted the
    ``(default)`` database only, so it can neither read nor write keys."""
    backends: tuple[BackendConfig, ...] = (
        BackendConfig(id="home-4090", kind=BackendKind.HOME_GPU, priority=10),
    )
    api: ApiSettings = ApiSettings()
    voices: VoiceSettings = VoiceSettings()
    runpod: RunPodSettings = RunPodSettings()
    monitor: MonitorSettings = MonitorSettings()
    webhooks: WebhookSettings = WebhookSettings()
    intake: IntakeSettings = IntakeSettings()
    retention: RetentionSettings = RetentionSettings()
    tracing: TracingSettings = TracingSettings()
    worker: WorkerSettings = WorkerSettings()

    storage_emulator_host: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TTS_STORAGE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"),
    )

    @model_validator(mode="after")
    def _backends_unique(self) -> Settings:
        ids = [b.id for b in self.backends]
        if len(ids) != len(set(ids)):
            raise ValueError(f"backend ids must be unique, got {ids}")
        return self

    @property
    def voices_bucket(self) -> str:
        """Where voice files live: ``voices.bucket``, or the main bucket when that is empty."""
        return self.voices.bucket or self.bucket

    def backend(self, backend_id: str) -> BackendConfig | None:
        return next((b for b in self.backends if b.id == backend_id), None)
