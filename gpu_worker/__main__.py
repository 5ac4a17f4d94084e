"""``python -m gpu_worker``: run the home-GPU subscriber until SIGTERM / Ctrl-C / Ctrl-Break.

Exit status: 0 once stopped; 2 when it cannot start; ``EXIT_POISONED`` (70, EX_SOFTWARE) after
a CUDA fault, which leaves nothing more to run in this process: its supervisor (NSSM, systemd)
starts a fresh one, whose heartbeat clears the ``unhealthy`` the fault left.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from gpu_worker import system_check
from gpu_worker.bootstrap import bootstrap
from shared.domain.errors import ConfigurationError, WorkerPoisoned
from shared.logs import configure_logging

log = logging.getLogger("gpu_worker")

EXIT_POISONED = 70


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
    try:
        worker.subscriber.serve(stop)
    except WorkerPoisoned as exc:
        log.critical("worker stopped by a CUDA fault; exiting for a fresh one: %s", exc.message)
        return EXIT_POISONED
    return 0


if __name__ == "__main__":
    sys.exit(main())
