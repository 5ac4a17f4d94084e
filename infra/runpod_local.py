"""A local endpoint that speaks RunPod's *cloud* serverless API, in front of a real handler.

The runpod SDK's own test server (``handler.py --rp_serve_api``) does not behave like the cloud:
its ``/run`` only stashes the job, ``POST /status/{id}`` runs it synchronously, and its webhook
body is ``{"output": ...}`` instead of the status JSON. ``RunPodClient`` and the webhook receiver
are written against the cloud, so this module puts the cloud's API in front of the SDK server:
a queue, one worker thread that drives the SDK's ``/run`` + ``/status`` pair per job, cloud-shaped
status records and webhooks, plus fault injection for the tests.

Dev use: ``python -m infra.runpod_local --handler "python gpu_worker/runpod_handler.py"``.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import queue
import shlex
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import quote

import requests
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server

from infra.processes import ManagedProcess, ProcessError, free_port, spawn

logger = logging.getLogger(__name__)

START_TIMEOUT_S: Final = 60.0
DEFAULT_EXECUTION_TIMEOUT_S: Final = 600.0  # RunPod's default when a request sets no policy
WEBHOOK_TIMEOUT_S: Final = 10.0
WEBHOOK_ATTEMPTS: Final = 3
WEBHOOK_RETRY_DELAY_S: Final = 1.0  # the cloud waits 10 s; tests cannot

# Inherited variables that could make the SDK talk to the real RunPod (heartbeat pings, job
# fetches). A local endpoint must never reach the internet; an explicit ``env`` may still set them.
_CLOUD_VARIABLES: Final = (
    "RUNPOD_AI_API_KEY",
    "RUNPOD_POD_ID",
    "RUNPOD_WEBHOOK_GET_JOB",
    "RUNPOD_WEBHOOK_POST_OUTPUT",
    "RUNPOD_WEBHOOK_PING",
)


class LocalRunPodError(ProcessError):
    pass


@dataclass
class _Job:
    id: str
    input: dict[str, object]
    webhook: str | None
    execution_timeout_s: float
    submitted_at: float
    status: str = "IN_QUEUE"
    output: object = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def cloud_view(self) -> dict[str, object]:
        view: dict[str, object] = {"id": self.id, "status": self.status}
        if self.started_at is not None:
            view["delayTime"] = round((self.started_at - self.submitted_at) * 1000)
            if self.finished_at is not None:
                view["executionTime"] = round((self.finished_at - self.started_at) * 1000)
        if self.output is not None:
            view["output"] = self.output
        if self.error is not None:
            view["error"] = self.error
        return view


def _absolute_paths(argv: Sequence[str]) -> list[str]:
    """Make relative paths in ``argv`` absolute: the handler runs in a private directory.

    It must, because the SDK pickles its job list to ``.runpod_jobs.pkl`` in its working
    directory, and two handlers sharing one (concurrent test runs in one checkout) would also
    share that file.
    """
    resolved = []
    for arg in argv:
        path = Path(arg)
        if not arg.startswith("-") and not path.is_absolute() and path.exists():
            resolved.append(str(path.resolve()))
        else:
            resolved.append(arg)
    return resolved


class LocalRunPod:
    """RunPod's serverless cloud API on 127.0.0.1, running jobs one at a time on a handler.

    The fault-injection attributes (``drop_webhooks``, ``webhook_headers``, ``hang_runs``,
    ``hang_s``) are read per request, so tests may flip them while it runs.
    """

    def __init__(
        self,
        *,
        handler: Sequence[str],
        env: Mapping[str, str] | None = None,
        endpoint_id: str = "local-endpoint",
        api_key: str = "local-runpod-key",
        log_dir: Path | None = None,
        port: int | None = None,
        hang_s: float = 15.0,
    ) -> None:
        if not handler:
            raise ValueError("handler must name the command that starts the handler")
        self._handler_argv = list(handler)
        self._env = dict(env or {})
        self._endpoint_id = endpoint_id
        self._api_key = api_key
        self._log_dir = log_dir
        self._port = port

        self.drop_webhooks = False
        self.webhook_headers: dict[str, str] = {}
        self.hang_runs = False
        self.hang_s = hang_s
        self.runs_received = 0
        self.webhooks_sent: list[dict[str, object]] = []
        self._fail_status = 0
        self._fail_count = 0
        self._fail_retry_after: str | None = None

        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._busy = False
        self._stopping = threading.Event()
        self._process: ManagedProcess | None = None
        self._server: BaseWSGIServer | None = None
        self._threads: list[threading.Thread] = []
        self._handler_url = ""
        self._http = requests.Session()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise LocalRunPodError("the local RunPod endpoint is not running")
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def endpoint_id(self) -> str:
        return self._endpoint_id

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def handler_alive(self) -> bool:
        return self._process is not None and self._process.alive

    def handler_log_tail(self, lines: int = 30) -> str:
        return self._process.log_tail(lines) if self._process is not None else ""

    # ------------------------------------------------------------------ fault injection

    def fail_next_runs(self, status: int, count: int, *, retry_after: str | None = None) -> None:
        """Answer the next ``count`` ``/run`` calls with ``status`` and queue nothing."""
        with self._lock:
            self._fail_status, self._fail_count = status, count
            self._fail_retry_after = retry_after

    def reset_faults(self) -> None:
        with self._lock:
            self._fail_count = 0
            self._fail_retry_after = None
            self.drop_webhooks = False
            self.webhook_headers = {}
            self.hang_runs = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalRunPod:
        if self._process is not None or self._stopping.is_set():
            raise LocalRunPodError("a LocalRunPod starts once")
        log_dir = self._log_dir or Path(tempfile.mkdtemp(prefix="tts-runpod-"))
        workdir = log_dir / "handler-cwd"
        workdir.mkdir(parents=True, exist_ok=True)
        handler_port = free_port()
        argv = [
            *_absolute_paths(self._handler_argv),
            "--rp_serve_api",
            "--rp_api_host", "127.0.0.1",
            "--rp_api_port", str(handler_port),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in _CLOUD_VARIABLES}
        env.update(self._env)
        # The handler imports the gateway's packages; the caller's checkout must stay importable.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path.cwd()), env.get("PYTHONPATH", "")) if p
        )
        try:
            self._process = spawn("runpod-handler", argv, log_dir=log_dir, env=env, cwd=workdir)
            self._handler_url = f"http://127.0.0.1:{handler_port}"
            self._wait_for_handler(self._process)
            self._serve()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._queue.put(None)
        if self._process is not None:
            # Before joining the worker: a job it is waiting on then fails fast.
            self._process.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self._http.close()

    def __enter__(self) -> LocalRunPod:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_for_handler(self, process: ManagedProcess) -> None:
        def answers() -> bool:
            try:
                self._http.get(f"{self._handler_url}/openapi.json", timeout=2)
            except requests.RequestException:
                return False
            return True

        try:
            process.wait_until(answers, timeout_s=START_TIMEOUT_S)
        except ProcessError as exc:
            raise LocalRunPodError(f"the RunPod handler did not start: {exc}") from exc

    def _serve(self) -> None:
        server = make_server("127.0.0.1", self._port or 0, self._build_app(), threaded=True)
        self._server = server
        threads = [
            # Polls for shutdown every 50 ms (the default 0.5 s is what stop() would wait).
            threading.Thread(
                target=server.serve_forever, args=(0.05,), name="runpod-local-http", daemon=True
            ),
            threading.Thread(target=self._work, name="runpod-local-worker", daemon=True),
        ]
        for thread in threads:
            thread.start()
            self._threads.append(thread)

    # ------------------------------------------------------------------ cloud API

    def _build_app(self) -> Flask:
        app = Flask("runpod_local")
        base = f"/{quote(self._endpoint_id, safe='')}"
        expected = f"Bearer {self._api_key}".encode()

        @app.before_request
        def authenticate() -> Response | None:
            given = request.headers.get("Authorization", "").encode()
            if hmac.compare_digest(given, expected):
                return None
            return _error(401, "missing or wrong API key")

        @app.errorhandler(HTTPException)
        def http_error(exc: HTTPException) -> Response:
            return _error(exc.code or 500, exc.description or exc.name)

        app.add_url_rule(f"{base}/run", "run", self._run, methods=["POST"])
        app.add_url_rule(f"{base}/status/<job_id>", "status", self._status, methods=["GET"])
        app.add_url_rule(f"{base}/health", "health", self._health, methods=["GET"])
        app.add_url_rule(f"{base}/cancel/<job_id>", "cancel", self._cancel, methods=["POST"])
        return app

    def _run(self) -> Response:
        with self._lock:
            self.runs_received += 1
            failing = self._fail_count > 0
            if failing:
                self._fail_count -= 1
            fail_status, retry_after = self._fail_status, self._fail_retry_after
        if failing:
            response = _error(fail_status, f"injected HTTP {fail_status}")
            if retry_after is not None:
                response.headers["Retry-After"] = retry_after
            return response
        if self.hang_runs and self._stopping.wait(self.hang_s):
            return _error(503, "shutting down")
        body = request.get_json(silent=True)
        problem = _run_body_problem(body)
        if problem is not None or not isinstance(body, dict):
            return _error(400, problem or "body must be a JSON object")
        policy = body.get("policy") or {}
        timeout_ms = policy.get("executionTimeout")
        job = _Job(
            id=str(uuid.uuid4()),
            input=body["input"],
            webhook=body.get("webhook"),
            execution_timeout_s=timeout_ms / 1000 if timeout_ms else DEFAULT_EXECUTION_TIMEOUT_S,
            submitted_at=time.monotonic(),
        )
        with self._lock:
            self._jobs[job.id] = job
        self._queue.put(job.id)
        return jsonify({"id": job.id, "status": job.status})

    def _status(self, job_id: str) -> Response:
        with self._lock:
            job = self._jobs.get(job_id)
            view = job.cloud_view() if job is not None else None
        if view is None:
            return _error(404, "request does not exist")
        return jsonify(view)

    def _health(self) -> Response:
        with self._lock:
            counts = {"COMPLETED": 0, "FAILED": 0, "IN_PROGRESS": 0, "IN_QUEUE": 0}
            for job in self._jobs.values():
                if job.status in counts:
                    counts[job.status] += 1
            busy = int(self._busy)
        return jsonify(
            {
                "jobs": {
                    "completed": counts["COMPLETED"],
                    "failed": counts["FAILED"],
                    "inProgress": counts["IN_PROGRESS"],
                    "inQueue": counts["IN_QUEUE"],
                    "retried": 0,
                },
                "workers": {
                    "idle": 1 - busy,
                    "initializing": 0,
                    "ready": 1 - busy,
                    "running": busy,
                    "throttled": 0,
                    "unhealthy": 0,
                },
            }
        )

    def _cancel(self, job_id: str) -> Response:
        """Cancel a queued or running job. A running one keeps running in the handler (the SDK
        cannot interrupt it); its result is dropped, as the cloud drops it."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and not job.finished:
                job.status = "CANCELLED"
                job.finished_at = time.monotonic()
            view = job.cloud_view() if job is not None else None
        if view is None:
            return _error(404, "request does not exist")
        return jsonify({"id": view["id"], "status": view["status"]})

    # ------------------------------------------------------------------ worker

    def _work(self) -> None:
        while not self._stopping.is_set():
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._lock:
                job = self._jobs[job_id]
                if job.status != "IN_QUEUE":
                    continue  # cancelled while queued
                job.status = "IN_PROGRESS"
                job.started_at = time.monotonic()
                self._busy = True
            try:
                status, output, error = self._execute(job)
            except Exception as exc:
                # Outermost boundary of the worker thread: one bad job must not stop the queue.
                logger.exception("local RunPod worker failed on a job", extra={"job": job_id})
                status, output, error = "FAILED", None, f"local worker crashed: {exc!r}"
            with self._lock:
                self._busy = False
                if job.status == "CANCELLED":
                    continue
                job.status, job.output, job.error = status, output, error
                job.finished_at = time.monotonic()
                view = job.cloud_view()
                headers = dict(self.webhook_headers)
                drop = self.drop_webhooks
            if job.webhook is not None and not drop:
                threading.Thread(
                    target=self._deliver_webhook,
                    args=(job.webhook, view, headers),
                    name=f"runpod-local-webhook-{job_id}",
                    daemon=True,
                ).start()

    def _execute(self, job: _Job) -> tuple[str, object, str | None]:
        """Run one job through the SDK's test server: ``/run`` stashes it, ``/status`` runs it."""
        try:
            stashed = self._http.post(
                f"{self._handler_url}/run",
                json={"input": job.input},
                timeout=job.execution_timeout_s,
            )
            stashed.raise_for_status()
            handler_id = str(stashed.json()["id"])
            ran = self._http.post(
                f"{self._handler_url}/status/{quote(handler_id, safe='')}",
                timeout=job.execution_timeout_s,
            )
            ran.raise_for_status()
            result = ran.json()
        except requests.Timeout:
            return "TIMED_OUT", None, f"execution exceeded {job.execution_timeout_s:g}s"
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            return "FAILED", None, f"the handler did not run the job: {type(exc).__name__}: {exc}"
        if not isinstance(result, dict):
            return "FAILED", None, f"the handler answered {result!r}"
        if result.get("status") == "COMPLETED":
            return "COMPLETED", result.get("output"), None
        return "FAILED", None, str(result.get("error") or "the handler reported no error")

    def _deliver_webhook(
        self, url: str, payload: dict[str, object], headers: dict[str, str]
    ) -> None:
        with self._lock:
            self.webhooks_sent.append(payload)
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            try:
                response = requests.post(
                    url, json=payload, headers=headers, timeout=WEBHOOK_TIMEOUT_S
                )
            except requests.RequestException as exc:
                problem = type(exc).__name__
            else:
                if response.ok:
                    return
                problem = f"HTTP {response.status_code}"
            logger.warning(
                "local RunPod webhook failed",
                extra={"job": payload.get("id"), "attempt": attempt, "problem": problem},
            )
            if attempt < WEBHOOK_ATTEMPTS and self._stopping.wait(WEBHOOK_RETRY_DELAY_S):
                return


def _run_body_problem(body: object) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not isinstance(body.get("input"), dict):
        return "'input' must be a JSON object"  # the SDK's test server insists on it too
    webhook = body.get("webhook")
    if webhook is not None and not isinstance(webhook, str):
        return "'webhook' must be a string"
    policy = body.get("policy")
    if policy is None:
        return None
    if not isinstance(policy, dict):
        return "'policy' must be a JSON object"
    timeout_ms = policy.get("executionTimeout")
    if timeout_ms is not None and (
        isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0
    ):
        return "'policy.executionTimeout' must be a positive number of milliseconds"
    return None


def _error(status: int, message: str) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.runpod_local",
        description="Serve RunPod's cloud serverless API locally in front of a handler script.",
    )
    parser.add_argument(
        "--handler", required=True, help='e.g. "python gpu_worker/runpod_handler.py"'
    )
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--endpoint-id", default="local-endpoint")
    parser.add_argument("--api-key", default="local-runpod-key")
    args = parser.parse_args(argv)
    handler = shlex.split(args.handler)
    if handler and handler[0] in {"python", "python3"}:
        handler[0] = sys.executable  # the handler needs this checkout's virtual environment
    logging.basicConfig(level=logging.INFO)
    # SIGTERM would otherwise end this process without unwinding, and orphan the handler, which
    # runs in a session of its own; SystemExit unwinds through ``with`` and stops it.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    with LocalRunPod(
        handler=handler, endpoint_id=args.endpoint_id, api_key=args.api_key, port=args.port
    ) as local:
        # A local development key, printed on purpose so the gateway can be pointed at it.
        print(f"base_url:    {local.base_url}")
        print(f"endpoint_id: {local.endpoint_id}")
        print(f"api_key:     {local.api_key}", flush=True)
        try:
            while local.handler_alive:
                time.sleep(1)
        except KeyboardInterrupt:
            return 0
        print(f"the handler exited:\n{local.handler_log_tail()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
