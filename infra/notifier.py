"""Local stand-in for GCS object notifications: the storage emulator sends none.

Polls the bucket and posts the CloudEvents Eventarc would deliver (finalized for a new
generation, deleted for a vanished one) to the local voice-registry function, so dropping a
``.pt`` into the emulator bucket behaves as it does in the cloud. Development only.

    python -m infra.notifier --target http://127.0.0.1:PORT [--prefix voice-prompts/]
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType

from google.cloud import storage

from shared.adapters.clients import storage_client
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class BucketNotifier:
    bucket: storage.Bucket
    prefix: str
    target: str
    seen: dict[str, storage.Blob] = field(default_factory=dict)

    def poll(self) -> int:
        """Post one event per change since the last poll; return how many were posted."""
        current = {b.name: b for b in self.bucket.list_blobs(prefix=self.prefix)}
        posted = 0
        for name, blob in current.items():
            old = self.seen.get(name)
            if old is None or old.generation != blob.generation:
                posted += self._post("finalized", blob)
        for name in self.seen.keys() - current.keys():
            posted += self._post("deleted", self.seen[name])
        self.seen = current
        return posted

    def _post(self, kind: str, blob: storage.Blob) -> int:
        envelope = {
            "specversion": "1.0",
            "id": f"{blob.name}#{blob.generation}#{kind}",
            "source": f"//storage.googleapis.com/projects/_/buckets/{self.bucket.name}",
            "type": f"google.cloud.storage.object.v1.{kind}",
            "subject": f"objects/{blob.name}",
            "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
            "data": _object_resource(blob),
        }
        request = urllib.request.Request(  # noqa: S310 - a loopback URL we were given
            self.target,
            data=json.dumps(envelope).encode(),
            headers={"Content-Type": "application/cloudevents+json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30):  # noqa: S310
                return 1
        except OSError as exc:
            log.warning("event not delivered: %s %s: %s", kind, blob.name, exc)
            return 0


def _object_resource(blob: storage.Blob) -> Mapping[str, object]:
    return {
        "bucket": blob.bucket.name,
        "name": blob.name,
        "generation": str(blob.generation),
        "metageneration": str(blob.metageneration or 1),
        "size": str(blob.size or 0),
        "contentType": blob.content_type,
        "md5Hash": blob.md5_hash,
        "metadata": blob.metadata or {},
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.notifier")
    parser.add_argument("--target", required=True, help="the voice-registry function's URL")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    # Storage triggers watch the voice files' bucket only, as deployed.
    bucket = storage_client(settings).bucket(settings.voices_bucket)
    notifier = BucketNotifier(bucket=bucket, prefix=settings.voices.prefix, target=args.target)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("notifier ready")
    while not stop.wait(args.interval):
        notifier.poll()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
