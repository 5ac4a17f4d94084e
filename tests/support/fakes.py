"""In-memory implementations of the ports, for unit tests and for wiring checks.

They keep the same contracts as the Google adapters (atomic ``update``, create-if-absent), so
a test that passes against a fake exercises the same core code as production.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.domain.backends import BackendHeartbeat, BackendStatus, HealthEvent
from shared.domain.errors import NotFound, PayloadTooLarge, StorageUnavailable, TransientError
from shared.domain.jobs import Job, JobState
from shared.domain.keys import ApiKey
from shared.domain.voices import Voice
from shared.usecases.ports import CachedAudio, Changes, StoredBlob
from shared.wire.runpod_status import EndpointHealth, RunPodStatus


class InMemoryJobStore:
    """``writes`` counts the updates each job took (``announcements`` the piece counts it was
    told); ``contended`` names jobs whose updates fail as Firestore's do when transactions keep
    meeting on one document (nothing is written). Every write tells the job's listeners
    (``listen``), as Firestore tells a document's ``on_snapshot`` listeners."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.RLock()  # update_reading holds it around update
        self._listeners: dict[str, list[Callable[[], None]]] = {}
        self.writes: Counter[str] = Counter()
        self.announcements: Counter[str] = Counter()
        self.contended: set[str] = set()

    def listen(self, job_id: str, changed: Callable[[], None]) -> Callable[[], None]:
        """Call ``changed`` after every write to the job; returns what stops it."""
        with self._lock:
            self._listeners.setdefault(job_id, []).append(changed)

        def stop() -> None:
            with self._lock:
                listeners = self._listeners.get(job_id, [])
                if changed in listeners:
                    listeners.remove(changed)
                if not listeners:
                    self._listeners.pop(job_id, None)

        return stop

    def _written(self, job_id: str) -> None:
        with self._lock:
            listeners = list(self._listeners.get(job_id, ()))
        for changed in listeners:
            changed()

    def create(self, job: Job) -> tuple[Job, bool]:
        with self._lock:
            if job.id in self._jobs:
                return self._jobs[job.id], False
            self._jobs[job.id] = job
        self._written(job.id)
        return job, True

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def update(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        if job_id in self.contended:
            raise StorageUnavailable(f"update job: contended: {job_id}")
        with self._lock:
            current = self._jobs.get(job_id)
            if current is None:
                raise NotFound(f"no job {job_id!r}")
            updated = change(current)
            self._jobs[job_id] = updated
            self.writes[job_id] += 1
        self._written(job_id)
        return updated

    def announce_parts(self, job_id: str, *, attempt: int, parts: int) -> None:
        with self._lock:
            current = self._jobs.get(job_id)
            if current is None:
                raise NotFound(f"announce parts: no job {job_id!r}")
            published = {**current.parts_published, attempt: parts}
            self._jobs[job_id] = current.model_copy(update={"parts_published": published})
            self.announcements[job_id] += 1
        self._written(job_id)

    def update_reading(
        self,
        job_id: str,
        *,
        reading: Sequence[str],
        change: Callable[[Job, Mapping[str, Job]], Job],
    ) -> Job:
        # Under the one lock, as the transaction would: nothing changes between read and write.
        with self._lock:
            others = {i: self._jobs[i] for i in reading if i in self._jobs}
            return self.update(job_id, lambda job: change(job, others))

    def find(
        self,
        *,
        state: JobState,
        backend: str | None = None,
        limit: int,
        updated_before: datetime | None = None,
        start_after: Job | None = None,
    ) -> list[Job]:
        return self._page(
            lambda j: (
                j.state is state
                and (backend is None or j.backend == backend)
                and (updated_before is None or j.updated_at <= updated_before)
            ),
            _updated,
            limit=limit,
            start_after=start_after,
        )

    def count(self, *, state: JobState, backend: str) -> int:
        return len(self.find(state=state, backend=backend, limit=1 << 30))

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        with self._lock:
            return {i: self._jobs[i] for i in job_ids if i in self._jobs}

    def count_children(self, *, parent_id: str, states: frozenset[JobState]) -> int:
        with self._lock:
            return sum(
                1 for j in self._jobs.values() if j.parent_id == parent_id and j.state in states
            )

    def find_overdue(self, *, now: datetime, limit: int) -> list[Job]:
        with self._lock:
            found = [
                j
                for j in self._jobs.values()
                if not j.state.terminal and j.deadline is not None and j.deadline <= now
            ]
        return sorted(found, key=lambda j: (j.deadline or now, j.id))[:limit]

    def list_owned(
        self,
        *,
        owner: str,
        state: JobState | None,
        created_after: datetime | None,
        start_after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Job]:
        with self._lock:
            found = [
                j
                for j in self._jobs.values()
                if j.owner == owner
                and (state is None or j.state is state)
                and (created_after is None or j.created_at > created_after)
                and (start_after is None or (j.created_at, j.id) > start_after)
            ]
        return sorted(found, key=lambda j: (j.created_at, j.id))[:limit]

    def find_webhooks_due(
        self, *, now: datetime, limit: int, start_after: Job | None = None
    ) -> list[Job]:
        return self._page(
            lambda j: j.webhook_due_at is not None and j.webhook_due_at <= now,
            lambda j: j.webhook_due_at,
            limit=limit,
            start_after=start_after,
        )

    def find_unannounced(
        self, *, updated_before: datetime, limit: int, start_after: Job | None = None
    ) -> list[Job]:
        return self._page(
            lambda j: j.result_pending and j.updated_at <= updated_before,
            _updated,
            limit=limit,
            start_after=start_after,
        )

    def find_replies_pending(
        self, *, updated_before: datetime, limit: int, start_after: Job | None = None
    ) -> list[Job]:
        return self._page(
            lambda j: j.reply_pending and j.updated_at <= updated_before,
            _updated,
            limit=limit,
            start_after=start_after,
        )

    def find_expired_leases(
        self, *, now: datetime, limit: int, start_after: Job | None = None
    ) -> list[Job]:
        return self._page(
            lambda j: (
                j.state is JobState.RUNNING and j.lease is not None and j.lease.expires_at <= now
            ),
            lambda j: j.lease.expires_at if j.lease is not None else None,
            limit=limit,
            start_after=start_after,
        )

    def find_runpod_cancels(self, *, limit: int, start_after: Job | None = None) -> list[Job]:
        return self._page(
            lambda j: j.runpod_cancel_due, lambda j: None, limit=limit, start_after=start_after
        )

    def _page(
        self,
        selected: Callable[[Job], bool],
        order: Callable[[Job], datetime | None],
        *,
        limit: int,
        start_after: Job | None,
    ) -> list[Job]:
        """As Firestore pages: by ``order`` then id, after ``start_after``'s place (taken from
        the job as the page before returned it, not as it is now)."""

        def key(job: Job) -> tuple[datetime, str]:
            return (order(job) or _NO_ORDER, job.id)

        with self._lock:
            found = sorted((j for j in self._jobs.values() if selected(j)), key=key)
        if start_after is not None:
            cursor = key(start_after)
            found = [j for j in found if key(j) > cursor]
        return found[:limit]

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())


class InMemoryJobWatcher:
    """``JobWatcher`` over the in-memory store: a watch hears every write to its job.

    With ``sleep`` (a fake clock's), a wait that has heard nothing sleeps its whole timeout
    through it, so a worker played from the clock's hooks moves meanwhile and the wait reports
    what it did: no threads, no timing. Without, it blocks on a real event, woken by a write
    from another thread the moment it happens."""

    def __init__(self, store: InMemoryJobStore, *, sleep: Callable[[float], None] | None = None):
        self._store = store
        self._sleep = sleep
        self.watching: Counter[str] = Counter()
        """Watches open now, by job: a test sees that every watch was closed."""

    @contextmanager
    def watch(self, job_id: str) -> Iterator[Changes]:
        changes = _HeardWrites(self._sleep)
        stop = self._store.listen(job_id, changes.heard)
        self.watching[job_id] += 1
        try:
            yield changes
        finally:
            stop()
            self.watching[job_id] -= 1


class _HeardWrites:
    def __init__(self, sleep: Callable[[float], None] | None) -> None:
        self._sleep = sleep
        self._changed = threading.Event()
        self._changed.set()  # the document as first found: Firestore's first snapshot

    def heard(self) -> None:
        self._changed.set()

    def wait(self, timeout_s: float) -> bool:
        if self._sleep is None:
            changed = self._changed.wait(max(timeout_s, 0.0))
        else:
            if not self._changed.is_set() and timeout_s > 0:
                self._sleep(timeout_s)
            changed = self._changed.is_set()
        if changed:
            self._changed.clear()
        return changed


_NO_ORDER = datetime.min.replace(tzinfo=UTC)
"""Stands in for a query ordered by id alone."""


def _updated(job: Job) -> datetime:
    return job.updated_at


class InMemoryBlobStore:
    """Objects with GCS-like generations; ``downloads`` counts ``get`` calls per path."""

    def __init__(self, bucket: str = "fake-bucket") -> None:
        self.bucket = bucket
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.generations: dict[str, int] = {}
        self.downloads: Counter[str] = Counter()
        self._next_generation = itertools.count(1_700_000_000_000_000)

    def put(self, path: str, data: bytes, *, content_type: str) -> StoredBlob:
        self.objects[path] = (data, content_type)
        self.generations[path] = next(self._next_generation)
        return StoredBlob(
            uri=f"gs://{self.bucket}/{path}", size=len(data), generation=self.generations[path]
        )

    def get(self, path: str, *, max_bytes: int | None = None) -> bytes:
        try:
            data = self.objects[path][0]
        except KeyError:
            raise NotFound(f"no object {path!r}") from None
        if max_bytes is not None and len(data) > max_bytes:
            raise PayloadTooLarge(f"{path} is {len(data)} bytes; the limit is {max_bytes}")
        self.downloads[path] += 1
        return data

    def copy(self, source: str, destination: str) -> StoredBlob:
        try:
            data, content_type = self.objects[source]
        except KeyError:
            raise NotFound(f"no object {source!r}") from None
        return self.put(destination, data, content_type=content_type)

    def delete(self, path: str, *, if_generation: int | None = None) -> bool:
        if if_generation is not None and self.generations.get(path) != if_generation:
            return False
        self.generations.pop(path, None)
        return self.objects.pop(path, None) is not None

    def signed_url(self, path: str, *, ttl_s: int, method: str = "GET") -> str:
        return f"https://signed.invalid/{self.bucket}/{path}?method={method}&ttl={ttl_s}"


@dataclass(frozen=True, slots=True)
class PublishedMessage:
    topic: str
    data: bytes
    attributes: Mapping[str, str]


@dataclass
class RecordingPublisher:
    """Keeps what was published; ``failures`` makes the next N publishes fail transiently;
    a topic in ``missing`` refuses every publish, as the adapter does for a deleted topic."""

    messages: list[PublishedMessage] = field(default_factory=list)
    failures: int = 0
    missing: set[str] = field(default_factory=set)

    def publish(self, topic: str, data: bytes, *, attributes: Mapping[str, str]) -> str:
        if topic in self.missing:
            raise TransientError(f"topic {topic} does not exist (fake)")
        if self.failures > 0:
            self.failures -= 1
            raise TransientError("publisher is down (fake)")
        self.messages.append(PublishedMessage(topic, data, dict(attributes)))
        return str(len(self.messages))


class InMemoryApiKeyStore:
    def __init__(self) -> None:
        self._keys: dict[str, ApiKey] = {}
        self.signatures: dict[str, str] = {}
        """Intake signatures noted: digest to the first message id."""

    def get(self, key_hash: str) -> ApiKey | None:
        return self._keys.get(key_hash)

    def find_by_id(self, key_id: str) -> ApiKey | None:
        return next((k for k in self._keys.values() if k.key_id == key_id), None)

    def put(self, key: ApiKey) -> None:
        self._keys[key.key_hash] = key

    def list_keys(self, *, owner: str | None) -> list[ApiKey]:
        found = [k for k in self._keys.values() if owner is None or k.owner == owner]
        return sorted(found, key=lambda k: (k.created_at, k.key_id))

    def note_signature(self, digest: str, *, message_id: str, expires_at: datetime) -> str:
        return self.signatures.setdefault(digest, message_id)


class InMemoryBackendStore:
    def __init__(self) -> None:
        self.beats: dict[str, BackendHeartbeat] = {}

    def heartbeat(self, beat: BackendHeartbeat) -> None:
        old = self.beats.get(beat.id)
        depth = old.queue_depth if old else 0
        self.beats[beat.id] = beat.model_copy(update={"queue_depth": depth})

    def get(self, backend_id: str) -> BackendHeartbeat | None:
        return self.beats.get(backend_id)

    def get_many(self, backend_ids: Sequence[str]) -> dict[str, BackendHeartbeat]:
        # Through ``get``, so a subclass that counts or fails reads sees these reads too.
        beats = {backend_id: self.get(backend_id) for backend_id in backend_ids}
        return {backend_id: beat for backend_id, beat in beats.items() if beat is not None}

    def set_queue_depth(self, backend_id: str, depth: int) -> None:
        if backend_id in self.beats:
            self.beats[backend_id] = self.beats[backend_id].model_copy(
                update={"queue_depth": depth}
            )

    def set_status(self, backend_id: str, status: BackendStatus) -> None:
        if backend_id in self.beats:
            self.beats[backend_id] = self.beats[backend_id].model_copy(update={"status": status})


class InMemoryVoiceStore:
    def __init__(self) -> None:
        self._voices: dict[str, Voice] = {}
        self._lock = threading.Lock()

    def get(self, voice_id: str) -> Voice | None:
        with self._lock:
            return self._voices.get(voice_id)

    def update(self, voice_id: str, change: Callable[[Voice | None], Voice | None]) -> Voice | None:
        with self._lock:
            current = self._voices.get(voice_id)
            updated = change(current)
            if updated is None:
                return current
            self._voices[voice_id] = updated
            return updated

    def delete(self, voice_id: str) -> None:
        with self._lock:
            self._voices.pop(voice_id, None)

    def query(
        self,
        *,
        name: str | None = None,
        character: str | None = None,
        emotion: str | None = None,
        tag: str | None = None,
        limit: int,
    ) -> list[Voice]:
        with self._lock:
            found = [
                v
                for v in self._voices.values()
                if v.active
                and (name is None or v.name_key == name.casefold())
                and (character is None or v.traits.character == character)
                and (emotion is None or v.traits.emotion == emotion)
                and (tag is None or tag in v.traits.tags)
            ]
        return sorted(found, key=lambda v: v.id)[:limit]


class InMemoryEventLog:
    def __init__(self) -> None:
        self.events: list[HealthEvent] = []

    def record(self, event: HealthEvent) -> None:
        self.events.append(event)

    def recent(self, *, limit: int) -> list[HealthEvent]:
        return sorted(self.events, key=lambda e: e.at, reverse=True)[:limit]


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.on_sleep: list[Callable[[], None]] = []
        """Run on every ``sleep``: how a test plays a worker while the API waits."""

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        """A wait that costs no time: the clock moves, and anything hooked to it runs."""
        self.advance(seconds)
        for hook in list(self.on_sleep):
            hook()


@dataclass
class FakeRunPod:
    """RunPod's API as the dispatcher sees it after the client's own retries."""

    failures: list[Exception] = field(default_factory=list)
    submitted: list[dict[str, object]] = field(default_factory=list)
    statuses: dict[str, RunPodStatus] = field(default_factory=dict)
    canceled: list[str] = field(default_factory=list)
    status_errors: dict[str, Exception] = field(default_factory=dict)
    """What ``/status`` raises for a RunPod id (purged: ``RunPodJobGone``)."""

    def run(
        self,
        *,
        payload: dict[str, object],
        webhook: str | None,
        execution_timeout_s: int,
        ttl_s: int,
    ) -> str:
        if self.failures:
            raise self.failures.pop(0)
        self.submitted.append({"payload": payload, "webhook": webhook, "ttl_s": ttl_s})
        return f"rp-{len(self.submitted)}"

    def status(self, runpod_id: str) -> RunPodStatus:
        if runpod_id in self.status_errors:
            raise self.status_errors[runpod_id]
        return self.statuses.get(runpod_id, RunPodStatus(id=runpod_id, status="IN_PROGRESS"))

    def cancel(self, runpod_id: str) -> None:
        self.canceled.append(runpod_id)

    def health(self) -> EndpointHealth:
        return EndpointHealth(
            workers_idle=1, workers_running=0, jobs_in_queue=0, jobs_in_progress=0
        )


@dataclass
class RecordingWebhooks:
    """Webhook calls as a receiver would see them; ``failures`` makes the next N fail."""

    calls: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    failures: int = 0

    def send(self, url: str, *, body: bytes, headers: Mapping[str, str]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise TransientError("the receiver answered HTTP 503 (fake)")
        self.calls.append((url, body, dict(headers)))


class InMemoryAudioCache:
    def __init__(self) -> None:
        self.entries: dict[str, CachedAudio] = {}

    def get(self, key: str) -> CachedAudio | None:
        return self.entries.get(key)

    def put(self, entry: CachedAudio) -> None:
        self.entries[entry.key] = entry
