"""A small typed client for RunPod's serverless REST API.

The Cloud Functions talk to RunPod through this module instead of the ``runpod`` package, which
drags in an async HTTP stack, FastAPI and more than the functions' cold start can afford. Every
``requests`` failure stops here: what a retry could fix becomes ``BackendUnavailable`` after the
retries ran out, what it could not becomes ``RunPodRejected``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Final
from urllib.parse import quote

import requests

from shared.domain.errors import (
    BackendUnavailable,
    ConfigurationError,
    RunPodJobGone,
    RunPodRejected,
)
from shared.wire.runpod_status import EndpointHealth, RunPodStatus, trimmed

logger = logging.getLogger(__name__)


RETRY_AFTER_CAP_S: Final = 30.0

# ConnectionError covers ConnectTimeout too; ChunkedEncodingError is a body cut off mid-way.
_NETWORK_ERRORS: Final = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
)


def _retry_after(response: requests.Response) -> float | None:
    """Seconds from a numeric ``Retry-After``; the HTTP-date form is ignored (RunPod sends none)."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, RETRY_AFTER_CAP_S)


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return trimmed(response.text.strip())
    if isinstance(body, Mapping) and isinstance(body.get("error"), str):
        return trimmed(body["error"])
    return trimmed(json.dumps(body, default=str))


class RunPodClient:
    """Calls one serverless endpoint. Retries what a retry can fix, and nothing else.

    Timeouts are retried even for ``/run``: RunPod may have accepted a request whose answer was
    lost, so the same input can be queued twice. The handler must therefore be idempotent per
    gateway job (it is: it writes results keyed by the job id carried in the input).

    ``budget_s`` bounds one call, every attempt, back-off and ``Retry-After`` included: the
    dispatcher runs inside a Pub/Sub push whose ack deadline must not pass while it retries, or
    the message comes back while the first delivery still holds the job.
    """

    def __init__(
        self,
        *,
        base_url: str,
        endpoint_id: str,
        api_key: str,
        timeout_s: float = 10.0,
        attempts: int = 4,
        backoff_s: float = 0.5,
        budget_s: float = 60.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if budget_s <= 0:
            raise ValueError("budget_s must be positive")
        if not endpoint_id or not api_key:
            raise ConfigurationError("RunPod endpoint id and API key are required")
        self._endpoint_url = f"{base_url.rstrip('/')}/{quote(endpoint_id, safe='')}"
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._budget_s = budget_s
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:
        # Spelled out so that no default repr ever prints the key.
        return f"RunPodClient(endpoint={self._endpoint_url!r})"

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def run(
        self,
        *,
        payload: Mapping[str, object],
        webhook: str | None,
        execution_timeout_s: int,
        ttl_s: int,
    ) -> str:
        """Queue a job; returns RunPod's id for it (not the gateway's job id)."""
        if execution_timeout_s <= 0 or ttl_s <= 0:
            raise ValueError("execution_timeout_s and ttl_s must be positive")
        body: dict[str, object] = {
            "input": dict(payload),
            "policy": {"executionTimeout": execution_timeout_s * 1000, "ttl": ttl_s * 1000},
        }
        if webhook is not None:
            body["webhook"] = webhook
        answer = self._call("POST", "/run", operation="run", body=body)
        job_id = answer.get("id") if isinstance(answer, Mapping) else None
        if not isinstance(job_id, str) or not job_id:
            raise RunPodRejected("RunPod accepted the job but returned no id")
        return job_id

    def status(self, runpod_id: str) -> RunPodStatus:
        """Raises ``RunPodJobGone`` when RunPod no longer knows the job (it purges finished
        jobs' results after a while)."""
        answer = self._call(
            "GET", f"/status/{quote(runpod_id, safe='')}", operation="status", names_job=True
        )
        return RunPodStatus.parse(answer)

    def health(self) -> EndpointHealth:
        return EndpointHealth.parse(self._call("GET", "/health", operation="health"))

    def cancel(self, runpod_id: str) -> None:
        self._call(
            "POST", f"/cancel/{quote(runpod_id, safe='')}", operation="cancel", names_job=True
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        body: object | None = None,
        names_job: bool = False,
    ) -> object:
        url = self._endpoint_url + path
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        last_status: int | None = None
        last_problem = ""
        last_exc: Exception | None = None
        give_up_at = self._clock() + self._budget_s
        attempt = 0
        while True:
            attempt += 1
            delay = self._backoff_s * 2 ** (attempt - 1)
            timeout_s = min(self._timeout_s, give_up_at - self._clock())
            try:
                response = self._session.request(
                    method, url, json=body, headers=headers, timeout=timeout_s
                )
            except _NETWORK_ERRORS as exc:
                last_status, last_problem, last_exc = None, type(exc).__name__, exc
            except requests.RequestException as exc:
                # Invalid URL, missing schema and the like: the settings are wrong, not RunPod.
                raise ConfigurationError(
                    f"RunPod {operation}: cannot send the request: {type(exc).__name__}"
                ) from exc
            else:
                code = response.status_code
                if code == 429 or code >= 500:
                    last_status, last_problem, last_exc = code, f"HTTP {code}", None
                    retry_after = _retry_after(response)
                    if retry_after is not None:
                        delay = retry_after
                elif code >= 400:
                    text = _error_text(response)
                    # On a path that names a job, 404 is about the job; elsewhere (an unknown
                    # endpoint) it is a setting that is wrong.
                    rejected = RunPodJobGone if names_job and code == 404 else RunPodRejected
                    raise rejected(
                        f"RunPod {operation} answered HTTP {code}: {text}",
                        details={"status": code, "error": text},
                    )
                else:
                    return _decode(response, operation=operation)
            # Another attempt only if it can still have a fair share of the budget after its
            # back-off: a request cut to a sliver of a timeout would fail for nothing.
            left_after_delay = give_up_at - self._clock() - delay
            if attempt >= self._attempts or left_after_delay < min(self._timeout_s, 1.0):
                break
            logger.warning(
                "RunPod call failed; retrying",
                extra={
                    "operation": operation,
                    "problem": last_problem,
                    "attempt": attempt,
                    "delay_s": delay,
                },
            )
            self._sleep(delay)
        raise BackendUnavailable(
            f"RunPod {operation} failed after {attempt} attempts: {last_problem}",
            details={"status": last_status, "attempts": attempt, "operation": operation},
        ) from last_exc


def _decode(response: requests.Response, *, operation: str) -> object:
    try:
        decoded: object = response.json()
    except ValueError as exc:
        raise RunPodRejected(
            f"RunPod {operation} answered HTTP {response.status_code} with invalid JSON: "
            f"{trimmed(response.text)}",
            details={"status": response.status_code},
        ) from exc
    return decoded
