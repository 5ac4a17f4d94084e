"""``python -m infra runpod deploy``: the worker image, RunPod's template and endpoint.

Idempotent. Builds and pushes ``gpu_worker/Dockerfile`` (tagged by the commit, so an unchanged
checkout keeps the same image reference), then makes RunPod's serverless template and endpoint
say what :class:`RunPodDeployment` says, through RunPod's REST API v2: each is looked up by name,
created when missing, patched when it differs and left alone when it matches, so a second run
changes nothing. Last, the endpoint id and the webhook URL go into a ``*.auto.tfvars.json``
that Terraform reads, which puts them into the functions' environment.

REST v2 (RunPod retired v1, ``rest.runpod.io/v1``, in November 2026), as its OpenAPI schema
describes it (runpod/docs ``api-reference-v2/openapi.json``, Frontdoor v2.9.0, August 2026):

- base ``https://api.runpod.io/v2`` (``RUNPOD_REST_BASE_URL`` or ``--api-base-url`` change it);
  ``/templates``, ``/templates/{id}``, ``/serverless``, ``/serverless/{id}``;
- lists come wrapped: ``{"templates": [...]}``, ``{"endpoints": [...]}``;
- request bodies are validated strictly (``unevaluatedProperties: false``): an unknown field is
  a 422, so each body below holds only fields the schema declares;
- an endpoint keeps no link to a template ("later template edits do not affect the endpoint"),
  so the endpoint carries the container (image, disk, env, registry) itself, and the template
  is the same container kept as a reusable record (the console, pods, a second endpoint);
- GPUs are chosen by serverless pool (``gpu.pools``), workers and scaling are nested, the
  execution timeout is ``timeout`` in milliseconds and ``flashboot`` is an enum.

Idempotence compares only fields the answer returns, and inside nested objects only the keys
the answer holds (it adds ``gpu.allowedCudaVersions`` and leaves out what it does not echo):
a field the answer lacks cannot be compared, so it never causes a patch on every run.
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

REST_BASE_URL = "https://api.runpod.io/v2"
"""RunPod's REST API v2. A setting: ``RUNPOD_REST_BASE_URL`` or ``--api-base-url``."""
TFVARS_FILE = Path(__file__).resolve().parent / "terraform" / "runpod.auto.tfvars.json"
REPO_ROOT = Path(__file__).resolve().parent.parent

ENDPOINT_FIXED_AT_CREATION = frozenset({"name", "type"})
"""``type`` (queue or load balancer) is not in v2's update schema: it is chosen once. The name
is how the endpoint is found (RunPod has shown flash-boot endpoints with " -fb" after it)."""


class RunPodDeployError(RuntimeError):
    pass


class RunPodDeployment(BaseModel):
    """What the RunPod side of the gateway should look like."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    template_name: str = "qwen3-tts-worker"
    endpoint_name: str = "qwen3-tts"
    image: str
    registry_auth_id: str | None = None
    """RunPod's id of the registry credentials (v2 ``registry``), for a private image."""
    container_disk_gb: int = Field(default=40, gt=0)
    """Room for the image's baked weights (~13 GB) and scratch audio."""
    env: dict[str, str] = {}
    gpu_pools: tuple[str, ...] = ("ADA_24", "ADA_48_PRO")
    """Serverless GPU pools (``GET /v2/catalog/gpus``, ``pool``): ADA_24 is the RTX 4090,
    ADA_48_PRO the L40, L40S and RTX 6000 Ada. 24 GB+ holds the three 1.7B models in bfloat16.
    RunPod places workers on whichever listed pool has capacity (no order of preference)."""
    min_cuda_version: str = "13.0"
    """The image's torch is the CUDA 13.0 build (gpu_worker/Dockerfile): older drivers refuse it."""
    workers_min: int = Field(default=0, ge=0)
    workers_max: int = Field(default=3, ge=1)
    idle_timeout_s: int = Field(default=5, ge=1, le=3600)
    execution_timeout_s: int = Field(default=600, gt=0)
    """Must match TTS_RUNPOD__EXECUTION_TIMEOUT_S, which the dispatcher also sends per job."""
    flashboot: bool = True
    queue_delay_s: float = Field(default=4, ge=0.5)
    """Scale up when a request waits this long in the queue (v2 ``QUEUE_DELAY`` scaling)."""

    def container(self) -> dict[str, Any]:
        """The container fields templates and endpoints share (v2 ``ContainerConfig``)."""
        body: dict[str, Any] = {
            "image": self.image,
            "disk": self.container_disk_gb,
            "env": dict(self.env),
        }
        if self.registry_auth_id:
            body["registry"] = self.registry_auth_id
        return body

    def template_body(self) -> dict[str, Any]:
        """v2 ``CreateTemplateRequest``; every field is also in ``UpdateTemplateRequest``."""
        return {
            "name": self.template_name,
            **self.container(),
            "serverless": True,
            # Both default to true and inject PUBLIC_KEY / JUPYTER_PASSWORD: a worker wants
            # neither.
            "startSsh": False,
            "startJupyter": False,
        }

    def endpoint_body(self) -> dict[str, Any]:
        """v2 ``CreateEndpointRequest`` (a GPU queue endpoint)."""
        return {
            "name": self.endpoint_name,
            "type": "QUEUE",
            **self.container(),
            "gpu": {
                "pools": list(self.gpu_pools),
                "count": 1,
                "minCudaVersion": self.min_cuda_version,
            },
            "workers": {
                "min": self.workers_min,
                "max": self.workers_max,
                "idleTimeout": self.idle_timeout_s,
            },
            "scaling": {"type": "QUEUE_DELAY", "queueDelay": self.queue_delay_s},
            "timeout": self.execution_timeout_s * 1000,
            "flashboot": "FLASHBOOT" if self.flashboot else "OFF",
        }


@dataclass(frozen=True)
class Outcome:
    template_id: str
    template_action: str
    endpoint_id: str
    endpoint_action: str


class RunPodRest:
    """The few calls of RunPod's REST API v2 this needs (templates, serverless endpoints)."""

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
                f"RunPod {method} {path}: HTTP {response.status_code}: {_problem(response)}"
            )
        return response.json() if response.content else None

    def templates(self) -> list[dict[str, Any]]:
        return list((self._call("GET", "/templates") or {}).get("templates") or [])

    def create_template(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/templates", json=dict(body)))

    def update_template(self, template_id: str, body: Mapping[str, Any]) -> None:
        self._call("PATCH", f"/templates/{template_id}", json=dict(body))

    def endpoints(self) -> list[dict[str, Any]]:
        return list((self._call("GET", "/serverless") or {}).get("endpoints") or [])

    def create_endpoint(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/serverless", json=dict(body)))

    def update_endpoint(self, endpoint_id: str, body: Mapping[str, Any]) -> None:
        self._call("PATCH", f"/serverless/{endpoint_id}", json=dict(body))


def _problem(response: requests.Response) -> str:
    """v2 answers errors as RFC 9457 problems: ``title``, ``detail`` and validation ``errors``."""
    try:
        problem = response.json()
    except ValueError:
        return response.text[:500]
    if not isinstance(problem, dict):
        return response.text[:500]
    parts = [str(problem.get(k)) for k in ("title", "detail") if problem.get(k)]
    parts += [str(e) for e in problem.get("errors") or []]
    return "; ".join(parts)[:500] or response.text[:500]


def _one_named(items: Sequence[Mapping[str, Any]], names: set[str], kind: str) -> Any:
    found = [i for i in items if i.get("name") in names]
    if len(found) > 1:
        ids = ", ".join(str(i.get("id")) for i in found)
        raise RunPodDeployError(f"several RunPod {kind}s are named {sorted(names)}: {ids}")
    return found[0] if found else None


def _matches(wanted: Any, current: Any) -> bool:
    """``current`` already holds ``wanted``. Objects compare on the keys the answer holds
    (``env`` is the exception: ours as a whole); lists and scalars compare as they are, so
    the order of GPU pools counts."""
    if isinstance(wanted, Mapping) and isinstance(current, Mapping):
        return all(k not in current or _matches(v, current[k]) for k, v in wanted.items())
    return bool(wanted == current)


def _differences(wanted: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``wanted`` the answer returns with another value. A field the answer does
    not return cannot be compared and is left alone (a patch on every run otherwise)."""
    changed: dict[str, Any] = {}
    for key, value in wanted.items():
        if key not in current:
            continue
        if key == "env":
            if dict(current[key] or {}) != value:
                changed[key] = value
        elif not _matches(value, current[key]):
            changed[key] = value
    return changed


def ensure(api: RunPodRest, deployment: RunPodDeployment) -> Outcome:
    """Create or update the template, then the endpoint; touch nothing that matches."""
    template_body = deployment.template_body()
    template = _one_named(api.templates(), {deployment.template_name}, "template")
    if template is None:
        template_id = str(api.create_template(template_body)["id"])
        template_action = "created"
    else:
        template_id = str(template["id"])
        changed = _differences(template_body, template)
        template_action = "unchanged"
        if changed:
            api.update_template(template_id, changed)
            template_action = f"updated ({', '.join(sorted(changed))})"

    endpoint_body = deployment.endpoint_body()
    # RunPod has shown flash-boot endpoints with " -fb" after the name.
    names = {deployment.endpoint_name, f"{deployment.endpoint_name} -fb"}
    endpoint = _one_named(api.endpoints(), names, "endpoint")
    if endpoint is None:
        endpoint_id = str(api.create_endpoint(endpoint_body)["id"])
        endpoint_action = "created"
    else:
        endpoint_id = str(endpoint["id"])
        comparable = {k: v for k, v in endpoint_body.items() if k not in ENDPOINT_FIXED_AT_CREATION}
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
