"""One exception hierarchy for the whole gateway.

Every error is either *permanent* (retrying cannot help: bad input, unknown job) or *transient*
(a dependency is down; retry later). Third-party exceptions are translated into these at the
adapter boundary with ``raise ... from``; entrypoints map them to HTTP status or ack/nack.
"""

from __future__ import annotations

from collections.abc import Mapping


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    code = "internal"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        details: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details: dict[str, object] = dict(details or {})


class PermanentError(GatewayError):
    """Retrying the same thing gives the same failure."""


class TransientError(GatewayError):
    """A dependency failed; the same request may succeed later."""

    code = "unavailable"
    retryable = True


class InvalidRequest(PermanentError):
    code = "invalid_request"


class PayloadTooLarge(PermanentError):
    code = "payload_too_large"


class Unauthenticated(PermanentError):
    code = "unauthenticated"


class StaleMessage(Unauthenticated):
    """A signed intake message published further from its signature's timestamp than the
    window allows: a copy republished later, or a signer whose clock is far off."""

    code = "stale_message"


class ReplayedMessage(Unauthenticated):
    """A signed intake message whose signature another message already carried: a copy."""

    code = "replayed_message"


class Forbidden(PermanentError):
    code = "forbidden"


class NotFound(PermanentError):
    code = "not_found"


class Conflict(PermanentError):
    """The resource exists but is not in a state that allows the operation."""

    code = "conflict"


class InvalidTransition(Conflict):
    """A job state change that the state machine forbids."""

    code = "invalid_transition"


class SynthesisFailed(PermanentError):
    """The model rejected the input or produced unusable audio."""

    code = "synthesis_failed"


class LineOutOfMemory(SynthesisFailed):
    """One line that does not fit the GPU's memory even alone: its batch was split and it was
    tried again by itself. Only its own job fails; the lines it was batched with are spoken."""

    code = "line_out_of_memory"


class InvalidVoice(InvalidRequest):
    """A voice the model cannot speak with: its prompt file does not fit the model that would
    use it (codes past the codebook, another number of code groups, another speaker-embedding
    size, longer than a reference may be) or no longer loads. The caller's choice of voice is
    at fault, so it is a 4xx naming the voice (in its message, and ``field`` "voice"), never
    a failed synthesis."""

    code = "invalid_voice"


class NoBackendAvailable(TransientError):
    """No configured backend can run this job right now."""

    code = "no_backend"


class BackendUnavailable(TransientError):
    code = "backend_unavailable"


class GpuOutOfMemory(TransientError):
    """The GPU ran out of memory: a smaller batch, or the same work later, may fit."""

    code = "gpu_out_of_memory"


class WorkerPoisoned(TransientError):
    """A CUDA fault (a device-side assert, an illegal memory access, any ``AcceleratorError``)
    broke the worker's CUDA context for good: nothing more may run in this process. The job is
    not at fault: it goes back to the queue without spending a try, the worker reports itself
    unhealthy and exits, and its supervisor starts a fresh one."""

    code = "worker_poisoned"


class StorageUnavailable(TransientError):
    code = "storage_unavailable"


class WebhookRejected(TransientError):
    """A webhook's receiver was reached and answered with an error (not 2xx)."""

    code = "webhook_rejected"


class ConfigurationError(PermanentError):
    """The process is misconfigured and must not start."""

    code = "misconfigured"


class ModelLoadError(ConfigurationError):
    """The configured model cannot be loaded."""

    code = "model_load_failed"


class InvalidVoiceFile(PermanentError):
    """A voice prompt file that must not be used: its ``reason`` says why (quarantine record)."""

    code = "invalid_voice_file"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, details={"reason": reason})
        self.reason = reason


class SynthesisRunaway(SynthesisFailed):
    """The model did not stop: the audio is far longer than the text could need."""

    code = "synthesis_runaway"


class PromptTooLong(SynthesisFailed):
    """A prompt plus its token budget would overflow the engine's fixed sequence length (the
    accelerated engine's static cache), which would cut the audio short without a word."""

    code = "prompt_too_long"


class JobCanceled(PermanentError):
    """The job was canceled (or ran past its deadline) while a worker held it: stop, keep
    nothing."""

    code = "canceled"


class JobFailed(PermanentError):
    """A caller waited for a job that failed; ``details`` carry the job's own error."""

    code = "job_failed"


class FailedJobStream(Conflict):
    """A stream asked for the audio of a job that failed: it has none and never will. A 409,
    since the job's state is what refuses, where a caller that waited for the job is answered
    ``JobFailed``; ``details`` carry the job's own error."""

    code = "job_failed"


class CanceledJobStream(FailedJobStream):
    """A stream asked for the audio of a job that was canceled (or ran past its deadline)."""

    code = "job_canceled"


class StreamRestarted(Conflict):
    """The run whose pieces a stream was sending lost its claim, and another attempt makes the
    job's audio anew: the pieces already sent belong to audio that will never be finished."""

    code = "job_restarted"


class JobNotSucceeded(Conflict):
    """What exists only once a job has succeeded (its captions) was asked of one that has not,
    or that failed; ``details`` carry its state."""

    code = "job_not_succeeded"


class NoJoinedFile(Conflict):
    """Captions of a batch are timed against its joined file, and this batch has none: it was
    submitted without ``join``. Each item's own captions can still be asked for."""

    code = "no_joined_file"


class NoWordTimings(Conflict):
    """The audio has no word timings to caption: it was made without ``verify: true``, or by a
    worker that cannot align words (``details`` may name the items of a batch that lack them)."""

    code = "no_word_timings"


class StillRunning(TransientError):
    """A caller's wait ran out before its job finished (or before its next piece of audio)."""

    code = "still_running"


class RunPodRejected(PermanentError):
    """RunPod refused the request itself (bad input, bad key, unknown endpoint): no retry helps."""

    code = "runpod_rejected"


class RunPodBadOutput(RunPodRejected):
    """RunPod's worker reported a result the job cannot have (another job's, another format)."""

    code = "runpod_bad_output"


class RunPodJobGone(RunPodRejected):
    """RunPod has no record of a job it was given: purged after its retention, or never queued.
    Whatever it produced is lost to us; only running the gateway job again can help."""

    code = "runpod_job_gone"
