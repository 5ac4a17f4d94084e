"""``python -m infra runpod deploy``: the worker image, RunPod's template and endpoint.

Idempotent. Builds and pushes ``gpu_worker/Dockerfile`` (tagged by the commit, so an unchanged
checkout keeps the same image reference), then makes RunPod's serverless template and endpoint
say what :class:`RunPodDeployment` says, through RunPod's REST API: each is looked up by name,
created when missing, patched when it differs and left alone when it matches, so a second run
changes nothing. Last, the endpoint id and the webhook URL go into a ``*.auto.tfvars.json``
that Terraform reads, which puts them into the functions' environment.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field

from infra.topology import Topology

log = logging.getLogger(__name__)

REST_BASE_URL = "https://rest.runpod.io/v1"
TFVARS_FILE = Path(__file__).resolve().parent / "terraform" / "runpod.auto.tfvars.json"
REPO_ROOT = Path(__file__).resolve().parent.parent


class RunPodDeployError(RuntimeError):
    pass


class RunPodDeployment(BaseModel):
    """What the RunPod side of the gateway should look like."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    template_name: str = "qwen3-tts-worker"
    endpoint_name: str = "qwen3-tts"
    image: str
    registry_auth_id: str | None = None
    """RunPod's id of the registry credentials, for a private image."""
    container_disk_gb: int = Field(default=40, gt=0)
    """Room for the image's baked weights (~13 GB) and scratch audio."""
    env: dict[str, str] = {}
    gpu_type_ids: tuple[str, ...] = (
        "NVIDIA GeForce RTX 4090",
        "NVIDIA L40S",
        "NVIDIA RTX 6000 Ada Generation",
    )
    """Rented in this order; 24 GB+ holds the three 1.7B models in bfloat16."""
    min_cuda_version: str = "13.0"
    """The image's torch is the CUDA 13.0 build (gpu_worker/Dockerfile): older drivers refuse it."""
    workers_min: int = Field(default=0, ge=0)
    workers_max: int = Field(default=3, ge=1)
    idle_timeout_s: int = Field(default=5, ge=1)
    execution_timeout_s: int = Field(default=600, gt=0)
    """Must match TTS_RUNPOD__EXECUTION_TIMEOUT_S, which the dispatcher also sends per job."""
    flashboot: bool = True

    def template_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.template_name,
            "imageName": self.image,
            "containerDiskInGb": self.container_disk_gb,
            "volumeInGb": 0,  # serverless workers have no pod volume
            "env": dict(self.env),
            "ports": [],
        }
        if self.registry_auth_id:
            body["containerRegistryAuthId"] = self.registry_auth_id
        return body

    def endpoint_body(self, template_id: str) -> dict[str, Any]:
        return {
            "name": self.endpoint_name,
            "templateId": template_id,
            "computeType": "GPU",
            "gpuTypeIds": list(self.gpu_type_ids),
            "gpuCount": 1,
            "minCudaVersion": self.min_cuda_version,
            "workersMin": self.workers_min,
            "workersMax": self.workers_max,
            "idleTimeout": self.idle_timeout_s,
            "executionTimeoutMs": self.execution_timeout_s * 1000,
            "flashboot": self.flashboot,
            "scalerType": "QUEUE_DELAY",
            "scalerValue": 4,
        }


@dataclass(frozen=True)
class Outcome:
    template_id: str
    template_action: str
    endpoint_id: str
    endpoint_action: str


class RunPodRest:
    """The few calls of RunPod's REST API this needs (``/templates``, ``/endpoints``)."""

    def __init__(self, *, api_key: str, base_url: str = REST_BASE_URL, timeout_s: float = 30):
        self._base = base_url.rstrip("/")
        self._timeout = timeout_s
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {api_key}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._session.request(
            method, f"{self._base}{path}", timeout=self._timeout, **kwargs
        )
        if response.status_code >= 400:
            raise RunPodDeployError(
                f"RunPod {method} {path}: HTTP {response.status_code}: {response.text[:500]}"
            )
        return response.json() if response.content else None

    def templates(self) -> list[dict[str, Any]]:
        # A template an endpoint uses is "endpoint bound" and left out unless asked for.
        result = self._call("GET", "/templates", params={"includeEndpointBoundTemplates": "true"})
        return list(result or [])

    def create_template(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/templates", json={**body, "isServerless": True}))

    def update_template(self, template_id: str, body: Mapping[str, Any]) -> None:
        self._call("PATCH", f"/templates/{template_id}", json=dict(body))

    def endpoints(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/endpoints") or [])

    def create_endpoint(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/endpoints", json=dict(body)))

    def update_endpoint(self, endpoint_id: str, body: Mapping[str, Any]) -> None:
        self._call("PATCH", f"/endpoints/{endpoint_id}", json=dict(body))


def _one_named(items: Sequence[Mapping[str, Any]], names: set[str], kind: str) -> Any:
    found = [i for i in items if i.get("name") in names]
    if len(found) > 1:
        ids = ", ".join(str(i.get("id")) for i in found)
        raise RunPodDeployError(f"several RunPod {kind}s are named {sorted(names)}: {ids}")
    return found[0] if found else None


def _differences(wanted: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``wanted`` that ``current`` does not already hold (lists compare unordered
    only where RunPod may reorder them: none here, so order matters, as it does for GPU types)."""
    return {k: v for k, v in wanted.items() if current.get(k) != v}


def ensure(api: RunPodRest, deployment: RunPodDeployment) -> Outcome:
    """Create or update the template, then the endpoint on it; touch nothing that matches."""
    template_body = deployment.template_body()
    template = _one_named(api.templates(), {deployment.template_name}, "template")
    if template is None:
        template_id = str(api.create_template(template_body)["id"])
        template_action = "created"
    else:
        template_id = str(template["id"])
        # ``name`` matches by construction, ``env`` compares as a whole object.
        changed = _differences(template_body, {**template, "env": template.get("env") or {}})
        template_action = "unchanged"
        if changed:
            api.update_template(template_id, changed)
            template_action = f"updated ({', '.join(sorted(changed))})"

    endpoint_body = deployment.endpoint_body(template_id)
    # RunPod has shown flash-boot endpoints with " -fb" after the name.
    names = {deployment.endpoint_name, f"{deployment.endpoint_name} -fb"}
    endpoint = _one_named(api.endpoints(), names, "endpoint")
    if endpoint is None:
        endpoint_id = str(api.create_endpoint(endpoint_body)["id"])
        endpoint_action = "created"
    else:
        endpoint_id = str(endpoint["id"])
        # computeType is fixed at creation; the name may carry RunPod's suffix.
        comparable = {k: v for k, v in endpoint_body.items() if k not in ("name", "computeType")}
        changed = _differences(comparable, endpoint)
        endpoint_action = "unchanged"
        if changed:
            api.update_endpoint(endpoint_id, changed)
            endpoint_action = f"updated ({', '.join(sorted(changed))})"
    return Outcome(template_id, template_action, endpoint_id, endpoint_action)


def webhook_url(topology: Topology, *, project_id: str, region: str) -> str:
    """The deployed ``runpod_webhook`` function's URL (gen2 functions keep this stable form)."""
    function = next(f for f in topology.functions if f.entry_point == "runpod_webhook")
    return f"https://{region}-{project_id}.cloudfunctions.net/{function.name}"


def write_tfvars(path: Path, *, endpoint_id: str, webhook: str) -> bool:
    """Write what Terraform needs; ``False`` when the file already said exactly that."""
    text = (
        json.dumps({"runpod_endpoint_id": endpoint_id, "runpod_webhook_url": webhook}, indent=2)
        + "\n"
    )
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def image_tag() -> str:
    """The checkout's commit: the same code gives the same image reference (and no update)."""
    out = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def build_and_push(image: str, *, build_args: Sequence[str] = ()) -> None:
    """``docker build`` from the repository root (the Dockerfile's context), then push."""
    command = ["docker", "build", "-f", "gpu_worker/Dockerfile", "-t", image]
    for arg in build_args:
        command += ["--build-arg", arg]
    subprocess.run([*command, "."], cwd=REPO_ROOT, check=True)
    subprocess.run(["docker", "push", image], cwd=REPO_ROOT, check=True)
