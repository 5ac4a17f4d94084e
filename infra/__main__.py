"""``python -m infra apply|deploy``: create the topology, deploy the functions."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import google.cloud.pubsub_v1 as pubsub_v1

from infra import deploy, topology
from shared.adapters.clients import storage_client
from shared.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra")
    sub = parser.add_subparsers(dest="command", required=True)
    apply_parser = sub.add_parser(
        "apply", help="create missing topics, subscriptions and the bucket"
    )
    apply_parser.add_argument(
        "--push-endpoint",
        action="append",
        default=[],
        metavar="FUNCTION=URL",
        help="where a push subscription's function listens (local stacks)",
    )
    deploy_parser = sub.add_parser("deploy", help="stage and deploy the functions")
    deploy_parser.add_argument("--region", required=True)
    deploy_parser.add_argument(
        "--push-service-account",
        required=True,
        help="the service account Pub/Sub signs push requests to the dispatcher with",
    )
    deploy_parser.add_argument("--dry-run", action="store_true", help="print, do not run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    declared = topology.load()

    if args.command == "apply":
        topology.apply(
            declared,
            project_id=settings.project_id,
            bucket=settings.bucket,
            publisher=pubsub_v1.PublisherClient(),
            subscriber=pubsub_v1.SubscriberClient(),
            storage_client=storage_client(settings),
            push_endpoints=dict(item.split("=", 1) for item in args.push_endpoint),
        )
        return

    sources = deploy.stage_all(Path(tempfile.mkdtemp(prefix="tts-functions-")), declared)
    commands = deploy.deploy_commands(
        declared,
        sources=sources,
        project_id=settings.project_id,
        bucket=settings.bucket,
        region=args.region,
        env={"TTS_PROJECT_ID": settings.project_id, "TTS_BUCKET": settings.bucket},
    )
    commands += deploy.wiring_commands(
        declared,
        project_id=settings.project_id,
        region=args.region,
        push_service_account=args.push_service_account,
    )
    if args.dry_run:
        for command in commands:
            print(" ".join(command))
        return
    deploy.run(commands)


if __name__ == "__main__":
    main()
