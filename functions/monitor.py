"""The scheduled monitor's entry point: Cloud Scheduler publishes a tick, this runs one pass."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict
from functools import cache

import functions_framework
from cloudevents.http import CloudEvent

from functions.bootstrap import bootstrap, runpod_client
from shared.adapters.runpod_api import RunPodClient
from shared.usecases.gateway import Gateway
from shared.usecases.monitor import MonitorReport, run_monitor

log = logging.getLogger(__name__)


@cache
def _gateway() -> Gateway:
    return bootstrap()


@cache
def _runpod() -> RunPodClient | None:
    settings = _gateway().settings
    return runpod_client(settings) if settings.runpod.endpoint_id else None


@functions_framework.cloud_event
def monitor(event: CloudEvent) -> None:
    report = run_monitor(_gateway(), runpod=_runpod())
    log.info("monitor pass", extra={"report": asdict(report)})


def main() -> None:
    """Local stand-in for Cloud Scheduler: ``python -m functions.monitor --every 60`` (the
    local stack passes the topology's schedule). SIGTERM or Ctrl-C ends it between passes."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m functions.monitor")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between passes")
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    gateway, runpod = _gateway(), _runpod()
    log.info("monitor ready", extra={"every_s": args.every})
    tick(lambda: run_monitor(gateway, runpod=runpod), every_s=args.every, stop=stop)


def tick(run_pass: Callable[[], MonitorReport], *, every_s: float, stop: threading.Event) -> None:
    """One pass now and one every ``every_s`` seconds until ``stop`` is set. A pass that fails
    is logged and the next tick runs anyway, as Cloud Scheduler's next tick would."""
    while not stop.is_set():
        try:
            report = run_pass()
        except Exception:  # the loop is this process's outermost boundary: log, keep ticking
            log.exception("monitor pass failed")
        else:
            if any(asdict(report).values()):
                log.info("monitor pass", extra={"report": asdict(report)})
        stop.wait(every_s)


if __name__ == "__main__":
    main()
