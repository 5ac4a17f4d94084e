"""The small interfaces the core talks through, implemented by adapters and fakes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from shared.domain.backends import BackendHeartbeat, BackendStatus, HealthEvent
from shared.domain.jobs import AudioResult, Job, JobState
from shared.domain.keys import ApiKey
from shared.domain.voices import Voice
from shared.wire.runpod_status import EndpointHealth, RunPodStatus

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]
"""Waits that many seconds (a fake clock advances instead)."""


class JobStore(Protocol):
    def create(self, job: Job) -> tuple[Job, bool]:
        """Store ``job`` unless its id exists; return the stored job and whether it was new."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def update(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        """Apply ``change`` to the current job atomically and store the result.

        Raises ``NotFound`` when the job does not exist; whatever ``change`` raises propagates
        and nothing is written.
        """
        ...

    def find(
        self,
        *,
        state: JobState,
        backend: str | None = None,
        limit: int,
        updated_before: datetime | None = None,
        start_after: Job | None = None,
    ) -> list[Job]:
        """Jobs in ``state`` (routed to ``backend``; last updated at or before
        ``updated_before``), by ``(updated_at, id)``, at most ``limit``.

        Every ``find_*`` below pages the same way: ``start_after`` is the last job of the page
        before, as that page returned it, and the next page starts after its place in the order.
        """
        ...

    def count(self, *, state: JobState, backend: str) -> int: ...

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        """The jobs that exist among ``job_ids``, by id, read together."""
        ...

    def update_reading(
        self,
        job_id: str,
        *,
        reading: Sequence[str],
        change: Callable[[Job, Mapping[str, Job]], Job],
    ) -> Job:
        """``update``, where ``change`` also sees the jobs ``reading`` names (those that exist)
        as read in the same transaction: a write to any of them meanwhile makes it read and
        decide again, so a parent never settles on children that have since changed."""
        ...

    def count_children(self, *, parent_id: str, states: frozenset[JobState]) -> int:
        """How many of ``parent_id``'s children are in one of ``states`` (an aggregation: no
        child document is read, and no parent document is written)."""
        ...

    def find_overdue(self, *, now: datetime, limit: int) -> list[Job]:
        """Queued or running jobs whose deadline is at or before ``now``, earliest first."""
        ...

    def list_owned(
        self,
        *,
        owner: str,
        state: JobState | None,
        created_after: datetime | None,
        start_after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Job]:
        """An owner's jobs by ``(created_at, id)``, after ``start_after`` when given."""
        ...

    def find_webhooks_due(
        self, *, now: datetime, limit: int, start_after: Job | None = None
    ) -> list[Job]:
        """Jobs with a webhook delivery due at or before ``now``, by ``(webhook_due_at, id)``."""
        ...

    def find_unannounced(
        self, *, updated_before: datetime, limit: int, start_after: Job | None = None
    ) -> list[Job]:
        """Jobs whose result message the results topic has not had (``result_pending``), last
        updated at or before ``updated_before``, by ``(updated_at, id)``."""
        ...

    def find_replies_pending(
        self, *, updated_before: datetime, limit: int, start_after: Job | None = None
    ) -> list[Job]:
        """The same for the jobs' reply topics (``reply_pending``)."""
        ...

    def find_expired_leases(
        self, *, now: datetime, limit: int, start_after: Job | None = None
    ) -> list[Job]:
        """Running jobs whose lease ran out at or before ``now``, by ``(lease.expires_at, id)``."""
        ...

    def find_runpod_cancels(self, *, limit: int, start_after: Job | None = None) -> list[Job]:
        """Canceled jobs whose RunPod job was not told to stop yet (``runpod_cancel_due``), by
        id."""
        ...

    def announce_parts(self, job_id: str, *, attempt: int, parts: int) -> None:
        """Record that run ``attempt`` of the job has published ``parts`` pieces of its audio
        (``Job.parts_published``), so a stream watching the job hears of them at once.

        A plain write of that one field, outside any transaction: cheap enough to follow every
        piece, and fenced by being keyed by the attempt, so a stale run's count lands under its
        own key and misleads no one. It never creates the job: ``NotFound`` when it is gone.
        """
        ...


class Changes(Protocol):
    """What a watch on one job document hears (see ``JobWatcher``)."""

    def wait(self, timeout_s: float) -> bool:
        """``True`` as soon as the document has changed since the last wait returned ``True``
        (since the watch began, for the first: the document as the watch first finds it counts,
        because the watcher cannot know what the caller read before), ``False`` once
        ``timeout_s`` has passed without that. It never waits much past ``timeout_s``.

        A ``True`` says only that something changed: the caller reads the job again (after the
        wait, so it sees at least that change). A watch whose listener broke or never started
        returns ``False`` at every timeout, which is why every caller also polls.
        """
        ...


class JobWatcher(Protocol):
    """Tells a waiting call that a job document changed, instead of it asking repeatedly."""

    def watch(self, job_id: str) -> AbstractContextManager[Changes]:
        """Listen to ``job_id``'s document for as long as the context is open (the listener
        is closed on exit). Never raises for a listener that cannot start: its ``Changes``
        then only time out."""
        ...


@dataclass(frozen=True, slots=True)
class StoredBlob:
    uri: str
    size: int
    generation: int | None


class BlobStore(Protocol):
    def put(self, path: str, data: bytes, *, content_type: str) -> StoredBlob: ...

    def get(self, path: str, *, max_bytes: int | None = None) -> bytes:
        """Raise ``NotFound`` when absent, ``PayloadTooLarge`` when over ``max_bytes``."""
        ...

    def copy(self, source: str, destination: str) -> StoredBlob: ...

    def delete(self, path: str, *, if_generation: int | None = None) -> bool:
        """Delete the object (only that generation, if given); return whether it existed."""
        ...

    def signed_url(self, path: str, *, ttl_s: int, method: str = "GET") -> str: ...


class Publisher(Protocol):
    def publish(self, topic: str, data: bytes, *, attributes: Mapping[str, str]) -> str:
        """Publish and wait for the server's message id; raise ``TransientError`` on failure."""
        ...


class ApiKeyStore(Protocol):
    def get(self, key_hash: str) -> ApiKey | None: ...

    def find_by_id(self, key_id: str) -> ApiKey | None: ...

    def put(self, key: ApiKey) -> None: ...

    def list_keys(self, *, owner: str | None) -> list[ApiKey]:
        """Every key (of ``owner``, if given), oldest first: for the key tool."""
        ...

    def note_signature(self, digest: str, *, message_id: str, expires_at: datetime) -> str:
        """Remember that the intake saw the signature ``digest`` on ``message_id`` unless it
        already did (create-if-absent, kept until ``expires_at``); return the message id it was
        first seen on. Another id than ours is a copy of that message."""
        ...


class BackendStore(Protocol):
    def heartbeat(self, beat: BackendHeartbeat) -> None:
        """Record what a backend says of itself; leaves the monitor's ``queue_depth`` alone."""
        ...

    def get(self, backend_id: str) -> BackendHeartbeat | None: ...

    def get_many(self, backend_ids: Sequence[str]) -> dict[str, BackendHeartbeat]:
        """The backends that have reported among ``backend_ids``, by id, read together."""
        ...

    def set_queue_depth(self, backend_id: str, depth: int) -> None: ...

    def set_status(self, backend_id: str, status: BackendStatus) -> None: ...


class VoiceStore(Protocol):
    def get(self, voice_id: str) -> Voice | None: ...

    def update(self, voice_id: str, change: Callable[[Voice | None], Voice | None]) -> Voice | None:
        """Apply ``change`` to the current voice (or ``None``) atomically.

        ``change`` returns the voice to store, or ``None`` to leave the record as it is. Returns
        the stored voice afterwards.
        """
        ...

    def delete(self, voice_id: str) -> None: ...

    def query(
        self,
        *,
        name: str | None = None,
        character: str | None = None,
        emotion: str | None = None,
        tag: str | None = None,
        limit: int,
    ) -> list[Voice]:
        """Active voices matching every given equality filter (``name`` case-insensitively),
        at most ``limit``."""
        ...


class EventLog(Protocol):
    def record(self, event: HealthEvent) -> None: ...

    def recent(self, *, limit: int) -> list[HealthEvent]:
        """Newest first."""
        ...


class RunPodApi(Protocol):
    """RunPod's serverless endpoint: submit a job, read its status, read the endpoint's health."""

    def run(
        self,
        *,
        payload: dict[str, object],
        webhook: str | None,
        execution_timeout_s: int,
        ttl_s: int,
    ) -> str: ...

    def status(self, runpod_id: str) -> RunPodStatus: ...

    def health(self) -> EndpointHealth: ...

    def cancel(self, runpod_id: str) -> None: ...


class WebhookSender(Protocol):
    def send(self, url: str, *, body: bytes, headers: Mapping[str, str]) -> None:
        """POST ``body`` to ``url``, the whole call within one deadline. Raises only the
        gateway's errors: ``InvalidRequest`` for a URL that is not a valid webhook URL,
        ``Forbidden`` for a scheme or an address it must not call, ``WebhookRejected`` when the
        receiver answered with an error, ``TransientError`` when it could not be reached in time."""
        ...


@dataclass(frozen=True, slots=True)
class CachedAudio:
    key: str
    job_id: str
    result: AudioResult
    created_at: datetime


class AudioCache(Protocol):
    """Finished audio by the content of the request that made it."""

    def get(self, key: str) -> CachedAudio | None: ...

    def put(self, entry: CachedAudio) -> None: ...


T = TypeVar("T")


class TaskRunner(Protocol):
    """Runs work beside the caller's own: a read that overlaps a write, or what may follow an
    answer instead of holding it (a cache hit's announcement)."""

    def submit(self, task: Callable[[], T], /) -> Future[T]:
        """Start ``task``; its outcome (value or exception) is the future's. A runner that is
        full, or inline by design, runs it before returning: never dropped, only not beside."""
        ...
