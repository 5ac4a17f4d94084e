"""The small interfaces the core talks through, implemented by adapters and fakes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from shared.auth import ApiKey
from shared.backends import BackendHeartbeat
from shared.jobs import Job
from shared.synthesis import SynthesisRequest

if TYPE_CHECKING:
    from shared.audio import Waveform

Clock = Callable[[], datetime]


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


@dataclass(frozen=True, slots=True)
class StoredBlob:
    uri: str
    size: int
    generation: int | None


class BlobStore(Protocol):
    def put(self, path: str, data: bytes, *, content_type: str) -> StoredBlob: ...

    def get(self, path: str) -> bytes: ...

    def signed_url(self, path: str, *, ttl_s: int, method: str = "GET") -> str: ...


class Publisher(Protocol):
    def publish(self, topic: str, data: bytes, *, attributes: Mapping[str, str]) -> str:
        """Publish and wait for the server's message id; raise ``TransientError`` on failure."""
        ...


class ApiKeyStore(Protocol):
    def get(self, key_hash: str) -> ApiKey | None: ...

    def put(self, key: ApiKey) -> None: ...


class BackendStore(Protocol):
    def heartbeat(self, beat: BackendHeartbeat) -> None: ...

    def get(self, backend_id: str) -> BackendHeartbeat | None: ...


class Synthesizer(Protocol):
    def synthesize(self, request: SynthesisRequest) -> Waveform: ...
