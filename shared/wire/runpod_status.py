"""What RunPod's API says about a job and an endpoint, parsed from its JSON.

The same status shape arrives from ``/status`` and from webhooks; webhooks come from the
internet, so every field is checked before the core acts on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from shared.domain.errors import RunPodRejected

FINISHED_STATUSES: Final = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
KNOWN_STATUSES: Final = FINISHED_STATUSES | {"IN_QUEUE", "IN_PROGRESS"}
ERROR_TEXT_LIMIT: Final = 500


def trimmed(text: str) -> str:
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 1] + "…"


@dataclass(frozen=True, kw_only=True)
class RunPodStatus:
    """One job's state as RunPod reports it, from ``/status`` or from a webhook (same shape)."""

    id: str
    status: str
    output: object | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "COMPLETED"

    @classmethod
    def parse(cls, payload: object) -> RunPodStatus:
        """Validate a decoded status body; webhooks come from the internet, so trust nothing.

        An unknown status is rejected rather than treated as "still running": a caller would
        otherwise poll a job forever on a status it cannot interpret.
        """
        if not isinstance(payload, Mapping):
            raise RunPodRejected(
                f"RunPod status is not a JSON object: {type(payload).__name__}",
                details={"payload_type": type(payload).__name__},
            )
        job_id = payload.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise RunPodRejected("RunPod status has no job id", field="id")
        status = payload.get("status")
        if not isinstance(status, str) or status not in KNOWN_STATUSES:
            raise RunPodRejected(
                f"RunPod status for {job_id} has an unknown status: {trimmed(repr(status))}",
                field="status",
            )
        error = payload.get("error")
        if error is not None and not isinstance(error, str):
            # A worker may fail with structured details; keep them readable rather than refuse
            # the whole report, since the status itself is still meaningful.
            error = json.dumps(error, default=str)
        return cls(id=job_id, status=status, output=payload.get("output"), error=error)


@dataclass(frozen=True, kw_only=True)
class EndpointHealth:
    """The counts a router needs to judge whether the endpoint will pick a job up soon."""

    workers_idle: int
    workers_running: int
    jobs_in_queue: int
    jobs_in_progress: int

    @classmethod
    def parse(cls, payload: object) -> EndpointHealth:
        if not isinstance(payload, Mapping):
            raise RunPodRejected("RunPod health is not a JSON object")
        jobs = payload.get("jobs")
        workers = payload.get("workers")
        if not isinstance(jobs, Mapping) or not isinstance(workers, Mapping):
            raise RunPodRejected("RunPod health lacks its 'jobs' or 'workers' section")
        return cls(
            workers_idle=_count(workers, "idle"),
            workers_running=_count(workers, "running"),
            jobs_in_queue=_count(jobs, "inQueue"),
            jobs_in_progress=_count(jobs, "inProgress"),
        )


def _count(section: Mapping[str, object], key: str) -> int:
    # An absent counter means none: RunPod has added counters over time and omits zeros in places.
    value = section.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RunPodRejected(f"RunPod health counter {key!r} is not a count: {value!r}")
    return value
