"""The scheduled monitor's entry point: Cloud Scheduler publishes a tick, this runs one pass."""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import cache

import functions_framework
from cloudevents.http import CloudEvent

from functions.bootstrap import bootstrap, runpod_client
from shared.adapters.runpod_api import RunPodClient
from shared.usecases.gateway import Gateway
from shared.usecases.monitor import run_monitor

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
    """Local stand-in for Cloud Scheduler: ``python -m functions.monitor --every 2``."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m functions.monitor")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between passes")
    args = parser.parse_args()
    gateway, runpod = _gateway(), _runpod()
    log.info("monitor ready")
    while True:
        report = run_monitor(gateway, runpod=runpod)
        if any(asdict(report).values()):
            log.info("monitor pass", extra={"report": asdict(report)})
        time.sleep(args.every)


if __name__ == "__main__":
    main()
