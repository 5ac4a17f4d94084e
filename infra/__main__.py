"""``python -m infra apply|stage|runpod deploy``.

- ``apply``: the topology on the emulators (``make run``, tests). The cloud is Terraform's
  (``infra/terraform``), which reads the same ``topology.yaml``.
- ``stage``: one source directory per function, for Terraform to zip and deploy.
- ``runpod deploy``: the worker image, RunPod's template and endpoint, and the values Terraform
  feeds into the functions' environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from infra import runpod_deploy, staging, topology


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra")
    sub = parser.add_subparsers(dest="command", required=True)
    apply_parser = sub.add_parser(
        "apply",
        help="emulators only: create missing topics, subscriptions and the bucket "
        "(the cloud is deployed by infra/terraform)",
    )
    apply_parser.add_argument(
        "--push-endpoint",
        action="append",
        default=[],
        metavar="FUNCTION=URL",
        help="where a push subscription's function listens (local stacks)",
    )
    stage_parser = sub.add_parser("stage", help="stage each function's source for Terraform")
    stage_parser.add_argument("--out", type=Path, required=True, help="one folder per function")
    stage_parser.add_argument(
        "--extra-index-url",
        default=None,
        help="PyTorch's CPU wheel index, for the functions that pin torch's +cpu build",
    )

    runpod = sub.add_parser("runpod", help="the RunPod worker image, template and endpoint")
    runpod_sub = runpod.add_subparsers(dest="runpod_command", required=True)
    rp = runpod_sub.add_parser(
        "deploy",
        help="build and push the image, create or update the template and endpoint "
        "(RUNPOD_API_KEY), write the endpoint id and webhook URL for Terraform",
    )
    rp.add_argument("--project", required=True, help="the Google Cloud project id")
    rp.add_argument("--region", required=True, help="the functions' region")
    rp.add_argument("--image-repo", required=True, help="where to push, e.g. docker.io/you/tts")
    rp.add_argument("--tag", default=None, help="default: the checkout's commit")
    rp.add_argument("--skip-build", action="store_true", help="the image is already pushed")
    rp.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    rp.add_argument("--registry-auth-id", default=None, help="RunPod's id for a private image")
    rp.add_argument(
        "--gpu-pool",
        action="append",
        default=[],
        help="RunPod serverless GPU pool ids (REST v2 gpu.pools), e.g. ADA_24; default: "
        + ", ".join(runpod_deploy.RunPodDeployment.model_fields["gpu_pools"].default),
    )
    rp.add_argument("--workers-max", type=int, default=3)
    rp.add_argument("--workers-min", type=int, default=0)
    rp.add_argument("--tfvars", type=Path, default=runpod_deploy.TFVARS_FILE)
    rp.add_argument(
        "--api-base-url",
        default=os.environ.get("RUNPOD_REST_BASE_URL") or runpod_deploy.REST_BASE_URL,
        help="RunPod's REST API v2 base (default: RUNPOD_REST_BASE_URL, else %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    declared = topology.load()

    if args.command == "apply":
        return _apply(declared, push_endpoints=args.push_endpoint)
    if args.command == "stage":
        try:
            staged = staging.stage_all(args.out, declared, extra_index_url=args.extra_index_url)
        except staging.StagingError as exc:
            print(f"python -m infra stage: {exc}", file=sys.stderr)
            return 2
        for name, path in staged.items():
            print(f"{name}: {path}")
        return 0
    return _runpod_deploy(args, declared)


def _apply(declared: topology.Topology, *, push_endpoints: list[str]) -> int:
    # Imported here: staging and RunPod need none of the Google clients.
    import google.cloud.pubsub_v1 as pubsub_v1

    from shared.adapters.clients import storage_client
    from shared.settings import Settings

    settings = Settings()
    topology.apply(
        declared,
        project_id=settings.project_id,
        bucket=settings.bucket,
        voices_bucket=settings.voices_bucket,
        publisher=pubsub_v1.PublisherClient(),
        subscriber=pubsub_v1.SubscriberClient(),
        storage_client=storage_client(settings),
        push_endpoints=dict(item.split("=", 1) for item in push_endpoints),
    )
    return 0


def _runpod_deploy(args: argparse.Namespace, declared: topology.Topology) -> int:
    api_key = os.environ.get("RUNPOD_API_KEY", "")
    if not api_key:
        print("python -m infra runpod deploy: set RUNPOD_API_KEY", file=sys.stderr)
        return 2
    from shared.settings import Settings

    image = f"{args.image_repo}:{args.tag or runpod_deploy.image_tag()}"
    if not args.skip_build:
        runpod_deploy.build_and_push(image, build_args=args.build_arg)
    deployment = runpod_deploy.RunPodDeployment(
        image=image,
        registry_auth_id=args.registry_auth_id,
        workers_max=args.workers_max,
        workers_min=args.workers_min,
        execution_timeout_s=Settings().runpod.execution_timeout_s,
        **({"gpu_pools": tuple(args.gpu_pool)} if args.gpu_pool else {}),
    )
    api = runpod_deploy.RunPodRest(api_key=api_key, base_url=args.api_base_url)
    outcome = runpod_deploy.ensure(api, deployment)
    print(f"template {outcome.template_id}: {outcome.template_action}")
    print(f"endpoint {outcome.endpoint_id}: {outcome.endpoint_action}")
    url = runpod_deploy.webhook_url(declared, project_id=args.project, region=args.region)
    written = runpod_deploy.write_tfvars(args.tfvars, endpoint_id=outcome.endpoint_id, webhook=url)
    print(f"{args.tfvars}: {'written' if written else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
