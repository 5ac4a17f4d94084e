"""The home 4090's entrypoint: a streaming-pull subscriber holding at most ``max_jobs`` jobs.

Flow control follows the batch bound (``TTS_WORKER__BATCH_SIZE``): that many jobs in hand, each
on its own callback thread with its own claim and lease, lets their lines meet in one batch at
the model (``gpu_worker.batching``), while the rest of the queue stays available to others.
The client library extends the Pub/Sub ack deadline while a callback runs, and the runner
extends the job's Firestore lease. On shutdown it stops pulling, lets the jobs in hand finish,
then returns.

A CUDA fault (``WorkerPoisoned``) stops it the same way, but for good: the job that met it went
back to the queue, the heartbeat says ``unhealthy`` at once (and to the end), no other job is
taken, and ``serve`` raises the fault once the jobs in hand are given back, for the process to
exit non-zero and its supervisor (NSSM, systemd) to start a fresh one.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import google.cloud.pubsub_v1 as pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message
from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

from gpu_worker.heartbeat import Heartbeat
from gpu_worker.runner import JobRunner
from shared.adapters import tracing
from shared.domain.backends import BackendStatus
from shared.domain.errors import InvalidRequest, WorkerPoisoned
from shared.wire.messages import JobMessage

log = logging.getLogger(__name__)


class HomeSubscriber:
    def __init__(
        self,
        *,
        client: pubsub_v1.SubscriberClient,
        subscription_path: str,
        runner: JobRunner,
        heartbeat: Heartbeat,
        max_lease_s: float,
        shutdown_grace_s: float,
        max_jobs: int = 1,
    ) -> None:
        self._client = client
        self._subscription_path = subscription_path
        self._runner = runner
        self._heartbeat = heartbeat
        self._max_lease_s = max_lease_s
        self._shutdown_grace_s = shutdown_grace_s
        self._max_jobs = max_jobs
        self._lock = threading.Lock()
        self._fault: WorkerPoisoned | None = None
        self._halt = threading.Event()
        """Set when serving ends: by ``stop``, or by a CUDA fault."""

    @property
    def fault(self) -> WorkerPoisoned | None:
        """The CUDA fault that stopped this worker, if one did."""
        return self._fault

    def handle(self, message: Message) -> None:
        """One delivery: decode, run, ack or nack. The outermost boundary of a job."""
        if self._fault is not None:
            message.nack()  # a broken worker takes no job; a fresh one will
            return
        try:
            job_message = JobMessage.decode(message.data)
        except InvalidRequest as exc:
            # Redelivery cannot fix a malformed body; nack it onto the dead-letter path.
            log.error(
                "malformed job message",
                extra={"error": exc.message, "message_id": message.message_id},
            )
            message.nack()
            return
        self._heartbeat.job_started()
        try:
            # The job's trace, continued from the request that published it (traceparent).
            with tracing.consumed(
                message.attributes, name="tts-jobs process", job_id=job_message.job_id
            ):
                result = self._runner.run(job_message)
        except WorkerPoisoned as exc:
            message.nack()  # the runner gave the job back; the message comes back for it
            self._poisoned(exc)
            return
        except Exception:  # the outermost boundary: a bug must not kill the stream
            log.exception("job run crashed", extra={"job_id": job_message.job_id})
            message.nack()
            return
        finally:
            self._heartbeat.job_ended()
        if result.ack:
            message.ack()
        else:
            message.nack()

    def _poisoned(self, fault: WorkerPoisoned) -> None:
        with self._lock:
            first, self._fault = self._fault is None, self._fault or fault
        if first:
            log.critical("CUDA fault: the worker stops for good", extra={"error": fault.message})
            self._heartbeat.unhealthy(fault.message)
            self._halt.set()

    def serve(self, stop: threading.Event) -> None:
        """Pull and run jobs until ``stop`` is set, then drain the jobs in hand. After a CUDA
        fault it stops by itself, and raises ``WorkerPoisoned`` once drained."""
        self._halt.clear()
        beats = threading.Thread(
            target=self._heartbeat.run, args=(self._halt,), name="heartbeat", daemon=True
        )
        beats.start()
        future = self._client.subscribe(
            self._subscription_path,
            callback=self.handle,
            flow_control=pubsub_v1.types.FlowControl(
                max_messages=self._max_jobs, max_lease_duration=self._max_lease_s
            ),
            # One callback thread per job in hand: the library's default pool has ten.
            scheduler=ThreadScheduler(
                ThreadPoolExecutor(max_workers=self._max_jobs, thread_name_prefix="job")
            ),
            await_callbacks_on_shutdown=True,
        )
        log.info("subscribed", extra={"subscription": self._subscription_path})
        try:
            while not stop.wait(1.0) and not self._halt.is_set():
                if future.done():
                    future.result()  # surfaces a dead stream as an exception
        finally:
            self._halt.set()
            future.cancel()
            try:
                future.result(timeout=self._shutdown_grace_s)
            except FutureTimeout:
                log.error("shutdown grace ran out with a job in hand; its lease will expire")
            except Exception:
                log.exception("streaming pull ended with an error")
            beats.join(timeout=5)
            self._heartbeat.beat(BackendStatus.OFFLINE)  # unhealthy, after a fault
            log.info("subscriber stopped")
        if self._fault is not None:
            raise self._fault
