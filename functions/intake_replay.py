"""``python -m functions.intake_replay [--max N]``: take again the intake messages Pub/Sub gave
up on.

A message the intake could not take because something it needs was down (Firestore, Pub/Sub,
its signing key unset) is retried, and after five deliveries Pub/Sub forwards it to
``tts-intake-dead-letter`` as it was, plus its ``CloudPubSubDeadLetter*`` attributes and
without an ``error_code``. The subscription ``tts-intake-dead-letter-replay`` holds only those
(filter ``NOT attributes:error_code``; the intake's own dead letters carry one and are final).
Once the outage is over, this pulls them and takes each as the intake function would, in this
process: its signature is verified, and its freshness is judged by its original publish time
(``CloudPubSubDeadLetterSourceTopicPublishTime``), so a replay hours later is not stale and a
copy someone republished is. Its signature may already have been noted under the original
message id by a delivery that failed after noting it, so that is no reason to refuse it here;
its idempotency key (the signed one, else one derived from the signature) makes it the same
job as any copy that got through. Each message is acknowledged once it is a job or a dead
letter with its reason; a transient failure stops the run, leaving the rest for the next one.

Needs what the intake function has: in the cloud, the deployment's settings and
``TTS_INTAKE__SIGNING_KEY`` (``gcloud secrets versions access latest
--secret=intake-signing-key``); against ``make run``, nothing (``functions.tool_env``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from google.cloud import pubsub_v1

from functions import tool_env
from functions.bootstrap import bootstrap
from functions.intake import published_at
from shared.adapters.errors import translated
from shared.domain.errors import ConfigurationError, GatewayError, TransientError
from shared.usecases.intake import ERROR_CODE, Intake, IntakeMessage, take

SUBSCRIPTION = "tts-intake-dead-letter-replay"
ORIGINAL_PUBLISH_TIME = "CloudPubSubDeadLetterSourceTopicPublishTime"
PULL_BATCH = 50


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m functions.intake_replay")
    parser.add_argument("--subscription", default=SUBSCRIPTION)
    parser.add_argument("--max", type=int, default=1000, help="messages at most (default 1000)")
    parser.add_argument("--env-file", type=Path, default=None)
    parser.add_argument("--no-env-file", action="store_true", help="ignore .devstack/env")
    args = parser.parse_args(argv)
    try:
        tool_env.load(env_file=args.env_file, ignore=args.no_env_file)
    except tool_env.EnvFileError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    gw = bootstrap()
    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(gw.settings.project_id, args.subscription)
    counts = {Intake.CREATED: 0, Intake.DEAD_LETTERED: 0}
    skipped = 0
    try:
        while sum(counts.values()) + skipped < args.max:
            with translated("pull dead letters", transient=TransientError):
                response = subscriber.pull(
                    subscription=path,
                    max_messages=min(PULL_BATCH, args.max - sum(counts.values()) - skipped),
                    return_immediately=True,
                    timeout=30,
                )
            received = list(response.received_messages)
            if not received:
                break
            for index, item in enumerate(received):
                if ERROR_CODE in item.message.attributes:
                    # The intake's own dead letter: final. The subscription's filter keeps these
                    # out in the cloud; the emulator applies no filter, and without this check a
                    # message refused here again would come back round, refused again, forever.
                    with translated("acknowledge dead letter", transient=TransientError):
                        subscriber.acknowledge(subscription=path, ack_ids=[item.ack_id])
                    skipped += 1
                    continue
                try:
                    outcome = take(gw, _message(item.message), replay=True)
                except (TransientError, ConfigurationError):
                    # Back to the subscription at once, for the next run.
                    subscriber.modify_ack_deadline(
                        subscription=path,
                        ack_ids=[r.ack_id for r in received[index:]],
                        ack_deadline_seconds=0,
                    )
                    raise
                with translated("acknowledge dead letter", transient=TransientError):
                    subscriber.acknowledge(subscription=path, ack_ids=[item.ack_id])
                counts[outcome.kind] += 1
    except GatewayError as exc:
        sys.stderr.write(f"stopped: {exc.message}\n")
        _report(counts, skipped)
        return 1
    _report(counts, skipped)
    return 0


def _message(raw: pubsub_v1.types.PubsubMessage) -> IntakeMessage:
    attributes = dict(raw.attributes)
    # Only Pub/Sub (and the functions' account) may publish to the dead-letter topic, so the
    # original publish time it recorded is trusted; without it, the forwarded copy's own.
    original = published_at(attributes.get(ORIGINAL_PUBLISH_TIME))
    own: datetime | None = raw.publish_time if isinstance(raw.publish_time, datetime) else None
    return IntakeMessage(
        data=bytes(raw.data),
        attributes=attributes,
        message_id=raw.message_id,
        published_at=original or own,
    )


def _report(counts: dict[Intake, int], skipped: int) -> None:
    sys.stdout.write(
        f"replayed {sum(counts.values())}: {counts[Intake.CREATED]} became jobs, "
        f"{counts[Intake.DEAD_LETTERED]} dead-lettered with their reason; {skipped} skipped "
        "(the intake's own dead letters, final)\n"
    )


if __name__ == "__main__":
    sys.exit(main())
