"""``python -m infra apply``: create the topology in the project the environment points at."""

from __future__ import annotations

import argparse
import logging

import google.cloud.pubsub_v1 as pubsub_v1

from infra import topology
from shared.adapters.clients import storage_client
from shared.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra")
    parser.add_argument("command", choices=["apply"])
    parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    topology.apply(
        topology.load(),
        project_id=settings.project_id,
        bucket=settings.bucket,
        publisher=pubsub_v1.PublisherClient(),
        subscriber=pubsub_v1.SubscriberClient(),
        storage_client=storage_client(settings),
    )


if __name__ == "__main__":
    main()
