"""Firestore-backed job, voice, API-key and backend stores."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.auth import exceptions as auth_exc
from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from shared.adapters.errors import translated
from shared.domain.backends import BackendHeartbeat, BackendStatus, HealthEvent
from shared.domain.errors import NotFound
from shared.domain.jobs import AudioResult, Job, JobState
from shared.domain.keys import ApiKey
from shared.domain.voices import Voice, VoiceState
from shared.usecases.ports import CachedAudio, Changes

log = logging.getLogger(__name__)


def to_document(value: Any) -> Any:
    """Pydantic ``python`` dumps hold enums, tuples and frozensets; Firestore wants plain values.

    Datetimes stay native so they are stored as timestamps and can be queried by range.
    """
    if isinstance(value, Mapping):
        return {str(to_document(k)): to_document(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [to_document(v) for v in value]
        return sorted(items) if isinstance(value, set | frozenset) else items
    if isinstance(value, Enum):
        return value.value
    return value


_CONTENDED = Retry(
    predicate=if_exception_type(gexc.Aborted), initial=0.05, maximum=1.0, timeout=10.0
)
"""Firestore answers ABORTED to a write that meets a transaction holding the same document (a
worker finishing the job a resubmission creates again). Nothing was written, so it is retried;
create-if-absent then finds the document, or makes it."""


_ANNOUNCE = Retry(predicate=if_exception_type(gexc.Aborted), initial=0.05, maximum=0.2, timeout=1.0)
"""A piece's announcement that meets a transaction on the job is tried again briefly, no more:
it only hastens a stream, which finds the piece by looking anyway, and the next piece's
announcement carries the count."""


class FirestoreJobStore:
    def __init__(self, client: firestore.Client, *, collection: str = "jobs") -> None:
        self._client = client
        self._jobs = client.collection(collection)

    def create(self, job: Job) -> tuple[Job, bool]:
        ref = self._jobs.document(job.id)
        with translated("create job"):
            try:
                ref.create(to_document(job.model_dump()), retry=_CONTENDED)
            except gexc.AlreadyExists:
                existing = self.get(job.id)
                if existing is None:  # deleted between the two calls
                    raise NotFound(f"job {job.id} vanished during create") from None
                return existing, False
        return job, True

    def get(self, job_id: str) -> Job | None:
        with translated("read job"):
            snap = self._jobs.document(job_id).get()
        return Job.model_validate(snap.to_dict()) if snap.exists else None

    def update(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        ref = self._jobs.document(job_id)

        @firestore.transactional
        def apply(transaction: firestore.Transaction) -> Job:
            snap = ref.get(transaction=transaction)
            if not snap.exists:
                raise NotFound(f"no job {job_id!r}")
            updated = change(Job.model_validate(snap.to_dict()))
            transaction.set(ref, to_document(updated.model_dump()))
            return updated

        with translated("update job"):
            updated: Job = apply(self._client.transaction())
        return updated

    def find(
        self,
        *,
        state: JobState,
        backend: str | None = None,
        limit: int,
        updated_before: datetime | None = None,
        start_after: Job | None = None,
    ) -> list[Job]:
        # Oldest first in the query itself, before the limit: a backlog larger than the limit
        # must not hide the jobs that have waited longest. Needs the composite indexes
        # (state, updated_at) and (state, backend, updated_at) the deployment declares.
        query = self._by(state=state, backend=backend)
        if updated_before is not None:
            query = query.where(filter=firestore.FieldFilter("updated_at", "<=", updated_before))
        return self._page(query, "updated_at", limit=limit, start_after=start_after, op="jobs")

    def count(self, *, state: JobState, backend: str) -> int:
        with translated("count jobs"):
            result = self._by(state=state, backend=backend).count().get()
        return int(result[0][0].value)

    def update_reading(
        self,
        job_id: str,
        *,
        reading: Sequence[str],
        change: Callable[[Job, Mapping[str, Job]], Job],
    ) -> Job:
        ref = self._jobs.document(job_id)
        others = [self._jobs.document(other) for other in reading]

        @firestore.transactional
        def apply(transaction: firestore.Transaction) -> Job:
            snap = ref.get(transaction=transaction)
            if not snap.exists:
                raise NotFound(f"no job {job_id!r}")
            read = transaction.get_all(others) if others else []
            jobs = [Job.model_validate(s.to_dict()) for s in read if s.exists]
            updated = change(Job.model_validate(snap.to_dict()), {j.id: j for j in jobs})
            transaction.set(ref, to_document(updated.model_dump()))
            return updated

        with translated("update job"):
            updated: Job = apply(self._client.transaction())
        return updated

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        refs = [self._jobs.document(job_id) for job_id in job_ids]
        with translated("read jobs"):
            snaps = list(self._client.get_all(refs)) if refs else []
        return {job.id: job for job in (Job.model_validate(s.to_dict()) for s in snaps if s.exists)}

    def count_children(self, *, parent_id: str, states: frozenset[JobState]) -> int:
        query: Any = self._jobs.where(filter=firestore.FieldFilter("parent_id", "==", parent_id))
        query = query.where(
            filter=firestore.FieldFilter("state", "in", sorted(s.value for s in states))
        )
        with translated("count children"):
            result = query.count().get()
        return int(result[0][0].value)

    def find_overdue(self, *, now: datetime, limit: int) -> list[Job]:
        # Needs the composite index (state, deadline) the deployment declares.
        open_states = [JobState.QUEUED.value, JobState.RUNNING.value]
        query = self._jobs.where(filter=firestore.FieldFilter("state", "in", open_states))
        query = query.where(filter=firestore.FieldFilter("deadline", "<=", now))
        return self._stream(query.order_by("deadline").limit(limit), "query overdue jobs")

    def list_owned(
        self,
        *,
        owner: str,
        state: JobState | None,
        created_after: datetime | None,
        start_after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Job]:
        # Needs the composite index (owner, state?, created_at, id) the deployment declares.
        query = self._jobs.where(filter=firestore.FieldFilter("owner", "==", owner))
        if state is not None:
            query = query.where(filter=firestore.FieldFilter("state", "==", state.value))
        if created_after is not None:
            query = query.where(filter=firestore.FieldFilter("created_at", ">", created_after))
        query = query.order_by("created_at").order_by("id")
        if start_after is not None:
            query = query.start_after({"created_at": start_after[0], "id": start_after[1]})
        return self._stream(query.limit(limit), "list jobs")

    def find_webhooks_due(
        self, *, now: datetime, limit: int, start_after: Job | None = None
    ) -> list[Job]:
        # A range on one field, ordered by it: its single-field index serves it. A job with
        # nothing pending stores null, which no timestamp range matches.
        query = self._jobs.where(filter=firestore.FieldFilter("webhook_due_at", "<=", now))
        return self._page(
            query, "webhook_due_at", limit=limit, start_after=start_after, op="webhooks"
        )

    def find_unannounced(
        self, *, updated_before: datetime, limit: int, start_after: Job | None = None
    ) -> list[Job]:
        # Needs the composite index (result_pending, updated_at) the deployment declares.
        return self._pending("result_pending", updated_before, limit=limit, start_after=start_after)

    def find_replies_pending(
        self, *, updated_before: datetime, limit: int, start_after: Job | None = None
    ) -> list[Job]:
        # Needs the composite index (reply_pending, updated_at) the deployment declares.
        return self._pending("reply_pending", updated_before, limit=limit, start_after=start_after)

    def find_expired_leases(
        self, *, now: datetime, limit: int, start_after: Job | None = None
    ) -> list[Job]:
        # Needs the composite index (state, lease.expires_at) the deployment declares. A parent
        # holds no lease (null), which no timestamp range matches.
        query = self._by(state=JobState.RUNNING, backend=None)
        query = query.where(filter=firestore.FieldFilter("lease.expires_at", "<=", now))
        return self._page(
            query, "lease.expires_at", limit=limit, start_after=start_after, op="leases"
        )

    def find_runpod_cancels(self, *, limit: int, start_after: Job | None = None) -> list[Job]:
        query = self._jobs.where(filter=firestore.FieldFilter("runpod_cancel_due", "==", True))
        return self._page(query, None, limit=limit, start_after=start_after, op="runpod cancels")

    def announce_parts(self, job_id: str, *, attempt: int, parts: int) -> None:
        # One key of one map, written with ``update`` (which never creates the document) and no
        # transaction: a transaction would read the job first and hold it against the worker's
        # own lease renewals. ``updated_at`` stays as it is: it dates the job's moves, which the
        # monitor's queries select on, and a piece is not one.
        key = FieldPath("parts_published", str(attempt)).to_api_repr()
        with translated("announce parts"):
            self._jobs.document(job_id).update({key: parts}, retry=_ANNOUNCE)

    def _pending(
        self, flag: str, updated_before: datetime, *, limit: int, start_after: Job | None
    ) -> list[Job]:
        query = self._jobs.where(filter=firestore.FieldFilter(flag, "==", True))
        query = query.where(filter=firestore.FieldFilter("updated_at", "<=", updated_before))
        return self._page(query, "updated_at", limit=limit, start_after=start_after, op=flag)

    def _page(
        self, query: Any, order: str | None, *, limit: int, start_after: Job | None, op: str
    ) -> list[Job]:
        """``query`` by ``order`` then document id (the job id), from after ``start_after``.

        The id makes the order total, so a cursor names one place in it even where many jobs
        share a timestamp; composite indexes end with it implicitly."""
        cursor: dict[str, object] = {}
        if order is not None:
            query = query.order_by(order)
            if start_after is not None:
                cursor[order] = _field(start_after, order)
        query = query.order_by(_DOCUMENT_ID)
        if start_after is not None:
            cursor[_DOCUMENT_ID] = start_after.id
            query = query.start_after(cursor)
        return self._stream(query.limit(limit), f"query {op}")

    def _stream(self, query: Any, operation: str) -> list[Job]:
        with translated(operation):
            return [Job.model_validate(s.to_dict()) for s in query.stream()]

    def _by(self, *, state: JobState, backend: str | None) -> Any:
        query = self._jobs.where(filter=firestore.FieldFilter("state", "==", state.value))
        if backend is not None:
            query = query.where(filter=firestore.FieldFilter("backend", "==", backend))
        return query


_DOCUMENT_ID = "__name__"


def _field(job: Job, path: str) -> object:
    """The value a stored job has at a dotted field path, as the document holds it."""
    value: Any = job.model_dump()
    for part in path.split("."):
        value = value[part]
    return to_document(value)


class FirestoreJobWatcher:
    """``JobWatcher`` over a real-time listener (``DocumentReference.on_snapshot``) on the job's
    document: one Listen stream per watch, closed when the watch ends.

    The listener is a shortcut, never the only way a waiter learns anything: one that cannot
    start is logged and its waits only time out, and one the server ends later (the client
    gives up on an error it cannot resume from, and tells no one) falls silent the same way.
    Either way the caller's own polling, which every wait keeps, carries on alone."""

    def __init__(self, client: firestore.Client, *, collection: str = "jobs") -> None:
        self._jobs = client.collection(collection)

    @contextmanager
    def watch(self, job_id: str) -> Iterator[Changes]:
        changes = _Snapshots()
        listener: Any = None
        try:
            listener = self._jobs.document(job_id).on_snapshot(changes.arrived)
        except _LISTENER_FAILURES as exc:  # a waiter without a listener polls: not fatal
            log.warning(
                "job listener did not start; waits poll",
                extra={"job_id": job_id, "error": type(exc).__name__},
            )
        try:
            yield changes
        finally:
            if listener is not None:
                _unsubscribe(listener, job_id)


_LISTENER_FAILURES = (gexc.GoogleAPIError, auth_exc.GoogleAuthError, RuntimeError, OSError)
"""What opening or closing a listener may raise (the client starts a thread and a Listen
stream; a stream's later errors stay on its own thread)."""


class _Snapshots:
    """Snapshots arrive on the listener's thread and set the event; ``wait`` clears it when it
    returns ``True``. A snapshot that lands between the two is not lost to the caller: it was
    committed before the event was set, so the read the caller makes next sees it."""

    def __init__(self) -> None:
        self._changed = threading.Event()

    def arrived(self, docs: object, changes: object, read_time: object) -> None:
        self._changed.set()

    def wait(self, timeout_s: float) -> bool:
        if not self._changed.wait(max(timeout_s, 0.0)):
            return False
        self._changed.clear()
        return True


def _unsubscribe(listener: Any, job_id: str) -> None:
    try:
        listener.unsubscribe()
    except _LISTENER_FAILURES as exc:  # the wait is over: a failed close must not undo it
        log.warning(
            "job listener did not close cleanly",
            extra={"job_id": job_id, "error": type(exc).__name__},
        )


class FirestoreApiKeyStore:
    def __init__(
        self,
        client: firestore.Client,
        *,
        collection: str = "api_keys",
        signatures: str = "intake_signatures",
    ) -> None:
        self._keys = client.collection(collection)
        self._signatures = client.collection(signatures)

    def get(self, key_hash: str) -> ApiKey | None:
        with translated("read api key"):
            snap = self._keys.document(key_hash).get()
        return ApiKey.model_validate(snap.to_dict()) if snap.exists else None

    def find_by_id(self, key_id: str) -> ApiKey | None:
        query = self._keys.where(filter=firestore.FieldFilter("key_id", "==", key_id)).limit(1)
        with translated("find api key"):
            snaps = list(query.stream())
        return ApiKey.model_validate(snaps[0].to_dict()) if snaps else None

    def put(self, key: ApiKey) -> None:
        with translated("write api key"):
            self._keys.document(key.key_hash).set(to_document(key.model_dump()))

    def list_keys(self, *, owner: str | None) -> list[ApiKey]:
        query: Any = self._keys
        if owner is not None:
            query = query.where(filter=firestore.FieldFilter("owner", "==", owner))
        with translated("list api keys"):
            keys = [ApiKey.model_validate(snap.to_dict()) for snap in query.stream()]
        # Sorted here, not in the query: a handful of keys needs no composite index.
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    def note_signature(self, digest: str, *, message_id: str, expires_at: datetime) -> str:
        # One document per signature, created only if absent: of two deliveries racing, exactly
        # one creates it, and the other reads whose it is. ``expires_at`` is the TTL field.
        ref = self._signatures.document(digest)
        with translated("note intake signature"):
            try:
                ref.create({"message_id": message_id, "expires_at": expires_at}, retry=_CONTENDED)
            except gexc.AlreadyExists:
                snap = ref.get()
                if snap.exists:
                    return str(snap.get("message_id"))
                # Deleted by its TTL between the two calls: it was past remembering anyway.
        return message_id


class FirestoreBackendStore:
    def __init__(self, client: firestore.Client, *, collection: str = "backends") -> None:
        self._client = client
        self._backends = client.collection(collection)

    def heartbeat(self, beat: BackendHeartbeat) -> None:
        document = to_document(beat.model_dump(exclude={"queue_depth"}))
        with translated("write heartbeat"):
            self._backends.document(beat.id).set(document, merge=True)

    def set_queue_depth(self, backend_id: str, depth: int) -> None:
        with translated("write queue depth"), suppress(gexc.NotFound):
            self._backends.document(backend_id).update({"queue_depth": depth})

    def set_status(self, backend_id: str, status: BackendStatus) -> None:
        with translated("write backend status"), suppress(gexc.NotFound):
            self._backends.document(backend_id).update({"status": status.value})

    def get(self, backend_id: str) -> BackendHeartbeat | None:
        with translated("read backend"):
            snap = self._backends.document(backend_id).get()
        return BackendHeartbeat.model_validate(snap.to_dict()) if snap.exists else None

    def get_many(self, backend_ids: Sequence[str]) -> dict[str, BackendHeartbeat]:
        # One BatchGetDocuments for all of them: routing reads every configured backend.
        refs = [self._backends.document(backend_id) for backend_id in backend_ids]
        with translated("read backends"):
            snaps = list(self._client.get_all(refs)) if refs else []
        beats = (BackendHeartbeat.model_validate(s.to_dict()) for s in snaps if s.exists)
        return {beat.id: beat for beat in beats}


class FirestoreVoiceStore:
    def __init__(self, client: firestore.Client, *, collection: str = "voices") -> None:
        self._client = client
        self._voices = client.collection(collection)

    def get(self, voice_id: str) -> Voice | None:
        with translated("read voice"):
            snap = self._voices.document(voice_id).get()
        return Voice.model_validate(snap.to_dict()) if snap.exists else None

    def update(self, voice_id: str, change: Callable[[Voice | None], Voice | None]) -> Voice | None:
        ref = self._voices.document(voice_id)

        @firestore.transactional
        def apply(transaction: firestore.Transaction) -> Voice | None:
            snap = ref.get(transaction=transaction)
            current = Voice.model_validate(snap.to_dict()) if snap.exists else None
            updated = change(current)
            if updated is None:
                return current
            transaction.set(ref, to_document(updated.model_dump()))
            return updated

        with translated("update voice"):
            stored: Voice | None = apply(self._client.transaction())
        return stored

    def delete(self, voice_id: str) -> None:
        with translated("delete voice"):
            self._voices.document(voice_id).delete()

    def query(
        self,
        *,
        name: str | None = None,
        character: str | None = None,
        emotion: str | None = None,
        tag: str | None = None,
        limit: int,
    ) -> list[Voice]:
        query = self._voices.where(
            filter=firestore.FieldFilter("state", "==", VoiceState.ACTIVE.value)
        )
        for field, op, value in (
            ("name_key", "==", name.casefold() if name is not None else None),
            ("traits.character", "==", character),
            ("traits.emotion", "==", emotion),
            ("traits.tags", "array_contains", tag),
        ):
            if value is not None:
                query = query.where(filter=firestore.FieldFilter(field, op, value))
        with translated("query voices"):
            snaps = list(query.limit(limit).stream())
        return sorted((Voice.model_validate(s.to_dict()) for s in snaps), key=lambda v: v.id)


class FirestoreEventLog:
    def __init__(self, client: firestore.Client, *, collection: str = "events") -> None:
        self._events = client.collection(collection)

    def record(self, event: HealthEvent) -> None:
        with translated("write event"):
            self._events.add(to_document(event.model_dump()))

    def recent(self, *, limit: int) -> list[HealthEvent]:
        query = self._events.order_by("at", direction=firestore.Query.DESCENDING).limit(limit)
        with translated("read events"):
            return [HealthEvent.model_validate(s.to_dict()) for s in query.stream()]


class FirestoreAudioCache:
    """``audio_cache/{key}``: which finished job's audio answers a request with that key.

    Each entry carries ``expires_at`` (its creation plus ``keep``, the audio's retention), the
    field Firestore's TTL policy deletes by: past it the audio is gone, and so is the entry."""

    def __init__(
        self,
        client: firestore.Client,
        *,
        collection: str = "audio_cache",
        keep: timedelta = timedelta(days=30),
    ) -> None:
        self._entries = client.collection(collection)
        self._keep = keep

    def get(self, key: str) -> CachedAudio | None:
        with translated("read audio cache"):
            snap = self._entries.document(key).get()
        if not snap.exists:
            return None
        data = snap.to_dict() or {}
        return CachedAudio(
            key=key,
            job_id=data["job_id"],
            result=AudioResult.model_validate(data["result"]),
            created_at=data["created_at"],
        )

    def put(self, entry: CachedAudio) -> None:
        document = {
            "job_id": entry.job_id,
            "result": to_document(entry.result.model_dump()),
            "created_at": entry.created_at,
            "expires_at": entry.created_at + self._keep,
        }
        with translated("write audio cache"):
            self._entries.document(entry.key).set(document)
