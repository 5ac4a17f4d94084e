"""``python -m gpu_worker``: run the home-GPU subscriber until SIGTERM / Ctrl-C / Ctrl-Break."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from gpu_worker import system_check
from gpu_worker.bootstrap import bootstrap
from shared.domain.errors import ConfigurationError
from shared.logs import configure_logging

log = logging.getLogger("gpu_worker")


def main() -> int:
    configure_logging()
    report = system_check.check()
    for note in report.notes:
        log.info("%s", note)
    if not report.ok:
        for problem in report.problems:
            log.error("worker cannot start: %s", problem)
        return 2
    try:
        worker = bootstrap()
    except ConfigurationError as exc:
        log.error("worker cannot start: %s", exc.message)
        return 2
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: finishing the job in hand, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # Windows never delivers SIGTERM to a console process: a service manager (NSSM) stops it
    # with Ctrl-C or Ctrl-Break, which Python sees as SIGINT and SIGBREAK.
    if hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, request_stop)
    log.info("worker ready")
    worker.subscriber.serve(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
