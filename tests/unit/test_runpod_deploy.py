"""``python -m infra runpod deploy`` against a fake of RunPod's REST API v2 on 127.0.0.1: the
real HTTP client, a strict server (unknown fields are a 422, as v2's ``unevaluatedProperties:
false`` makes them), the first run creates, a second run writes nothing, a change patches only
what differs.

The fake follows v2's OpenAPI schema (runpod/docs ``api-reference-v2/openapi.json``): the
``/v2`` base path, one ``{id}`` path parameter, lists wrapped in ``{"templates": [...]}`` /
``{"endpoints": [...]}``, answers that fill in defaults and add fields of their own (an endpoint
keeps no ``templateId``; ``gpu`` gains ``allowedCudaVersions``), RFC 9457 problems for errors.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from infra import runpod_deploy, topology
from infra.__main__ import main as infra_main

CONTAINER = {"image", "args", "disk", "env", "ports", "registry"}
TEMPLATE_FIELDS = CONTAINER | {
    "name",
    "allowedCudaVersions",
    "category",
    "mounts",
    "public",
    "serverless",
    "startJupyter",
    "startSsh",
}
ENDPOINT_CREATE_FIELDS = CONTAINER | {
    "name",
    "type",
    "gpu",
    "cpu",
    "scaling",
    "dataCenterIds",
    "flashboot",
    "networkVolumes",
    "templateId",
    "timeout",
    "workers",
}
# No `type`: it is chosen at creation only.
ENDPOINT_UPDATE_FIELDS = ENDPOINT_CREATE_FIELDS - {"type"}
GPU_FIELDS = {"pools", "excludedTypes", "count", "allowedCudaVersions", "minCudaVersion"}
WORKER_FIELDS = {"min", "max", "idleTimeout"}
SCALING_FIELDS = {"QUEUE_DELAY": {"type", "queueDelay"}, "REQUEST_COUNT": {"type", "requestCount"}}


def _unknown(body: dict[str, Any], allowed: set[str], where: str = "$") -> list[str]:
    return [f"{where}: additional properties '{k}' not allowed" for k in body if k not in allowed]


def validate_template(body: dict[str, Any], *, create: bool) -> list[str]:
    errors = _unknown(body, TEMPLATE_FIELDS)
    if create:
        errors += [f"$: missing property '{k}'" for k in ("name", "image") if k not in body]
    return errors


def validate_endpoint(body: dict[str, Any], *, create: bool) -> list[str]:
    errors = _unknown(body, ENDPOINT_CREATE_FIELDS if create else ENDPOINT_UPDATE_FIELDS)
    if create:
        errors += [
            f"$: missing property '{k}'" for k in ("name", "type", "scaling") if k not in body
        ]
        if "templateId" not in body and "image" not in body:
            errors.append("$: missing property 'image'")
        if body.get("type") not in ("QUEUE", "LOAD_BALANCER"):
            errors.append("$.type: value must be one of QUEUE, LOAD_BALANCER")
    if "gpu" in body:
        errors += _unknown(body["gpu"], GPU_FIELDS, "$.gpu")
        if create and not body["gpu"].get("pools"):
            errors.append("$.gpu: missing property 'pools'")
    if "workers" in body:
        errors += _unknown(body["workers"], WORKER_FIELDS, "$.workers")
    if "scaling" in body:
        kind = body["scaling"].get("type")
        if kind not in SCALING_FIELDS:
            errors.append("$.scaling.type: value must be one of QUEUE_DELAY, REQUEST_COUNT")
        else:
            errors += _unknown(body["scaling"], SCALING_FIELDS[kind], "$.scaling")
    if "flashboot" in body and body["flashboot"] not in ("OFF", "FLASHBOOT", "PRIORITY_FLASHBOOT"):
        errors.append("$.flashboot: value must be one of OFF, FLASHBOOT, PRIORITY_FLASHBOOT")
    return errors


class FakeRunPodV2:
    """RunPod's templates and serverless endpoints as REST v2 keeps and answers them."""

    def __init__(self) -> None:
        self.templates: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str, dict[str, Any]]] = []
        self.requests: list[tuple[str, str]] = []
        self.auth: set[str] = set()
        self.leave_out: set[str] = set()
        """Endpoint fields this fake's answers leave out (a field v2 stopped echoing)."""
        self._ids = 0

    def new_id(self) -> str:
        self._ids += 1
        return f"id{self._ids:04d}"

    def new_template(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.new_id(),
            "args": "",
            "disk": 20,
            "mounts": {},
            "ports": [],
            "env": {},
            "registry": None,
            "serverless": False,
            "public": False,
            "category": "NVIDIA",
            "startSsh": True,
            "startJupyter": True,
            "allowedCudaVersions": [],
            **body,
        }

    def new_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint_id = self.new_id()
        base = f"https://api.runpod.ai/v2/{endpoint_id}"
        item: dict[str, Any] = {
            "id": endpoint_id,
            "requestUrls": {"run": f"{base}/run", "status": f"{base}/status/{{job_id}}"},
            "args": "",
            "disk": 20,
            "ports": [],
            "env": {},
            "registry": None,
            "dataCenterIds": [],
            "networkVolumes": [],
            "timeout": 300000,
            "flashboot": "OFF",
            "createdAt": "2026-11-20T12:00:00Z",
            **{k: v for k, v in body.items() if k not in ("gpu", "workers", "templateId")},
        }
        item["gpu"] = {
            "count": 1,
            "allowedCudaVersions": [],
            "minCudaVersion": None,
            **body.get("gpu", {}),
        }
        item["workers"] = {"min": 0, "max": 3, "idleTimeout": 10, **body.get("workers", {})}
        if body.get("flashboot", "OFF") != "OFF":
            item["name"] = f"{body['name']} -fb"  # what RunPod has shown
        return item

    def patch_endpoint(self, item: dict[str, Any], body: dict[str, Any]) -> None:
        for key, value in body.items():
            if key == "gpu":
                gpu = {**item["gpu"], **value}
                if "pools" in value and "excludedTypes" not in value:
                    gpu.pop("excludedTypes", None)  # pools replace the whole selection
                item["gpu"] = gpu
            elif key == "workers":
                item["workers"] = {**item["workers"], **value}
            elif key != "templateId":
                item[key] = value

    def answer(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if k not in self.leave_out}


@pytest.fixture
def fake() -> Iterator[tuple[FakeRunPodV2, str]]:
    state = FakeRunPodV2()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, *, problem: bool = False) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            kind = "application/problem+json" if problem else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _problem(self, status: int, detail: str, errors: list[str] | None = None) -> None:
            titles = {404: "Not Found", 422: "Unprocessable Entity"}
            body: dict[str, Any] = {"title": titles[status], "status": status, "detail": detail}
            if errors:
                body["errors"] = errors
            self._send(status, body, problem=True)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            return dict(json.loads(self.rfile.read(length) or b"{}"))

        def _route(self) -> tuple[str, str]:
            """(collection, id) under /v2; ("", "") for anything else."""
            path = self.path.partition("?")[0]
            if not path.startswith("/v2/"):
                return "", ""
            collection, _, item_id = path.removeprefix("/v2/").partition("/")
            return collection, item_id

        def do_GET(self) -> None:
            state.auth.add(self.headers.get("Authorization", ""))
            state.requests.append(("GET", self.path))
            match self._route():
                case ("templates", ""):
                    self._send(200, {"templates": list(state.templates.values())})
                case ("serverless", ""):
                    endpoints = [state.answer(e) for e in state.endpoints.values()]
                    self._send(200, {"endpoints": endpoints})
                case _:
                    self._problem(404, f"no route {self.path}")

        def do_POST(self) -> None:
            state.auth.add(self.headers.get("Authorization", ""))
            body = self._body()
            match self._route():
                case ("templates", ""):
                    errors = validate_template(body, create=True)
                    if errors:
                        self._problem(422, "the request body is invalid", errors)
                        return
                    state.writes.append(("POST", self.path, body))
                    item = state.new_template(body)
                    state.templates[item["id"]] = item
                    self._send(201, item)
                case ("serverless", ""):
                    errors = validate_endpoint(body, create=True)
                    if errors:
                        self._problem(422, "the request body is invalid", errors)
                        return
                    state.writes.append(("POST", self.path, body))
                    item = state.new_endpoint(body)
                    state.endpoints[item["id"]] = item
                    self._send(201, state.answer(item))
                case _:
                    self._problem(404, f"no route {self.path}")

        def do_PATCH(self) -> None:
            state.auth.add(self.headers.get("Authorization", ""))
            body = self._body()
            collection, item_id = self._route()
            if collection == "templates" and item_id in state.templates:
                errors = validate_template(body, create=False)
                if errors:
                    self._problem(422, "the request body is invalid", errors)
                    return
                state.writes.append(("PATCH", self.path, body))
                state.templates[item_id].update(body)
                self._send(200, state.templates[item_id])
            elif collection == "serverless" and item_id in state.endpoints:
                errors = validate_endpoint(body, create=False)
                if errors:
                    self._problem(422, "the request body is invalid", errors)
                    return
                state.writes.append(("PATCH", self.path, body))
                state.patch_endpoint(state.endpoints[item_id], body)
                self._send(200, state.answer(state.endpoints[item_id]))
            else:
                self._problem(404, f"no {collection} {item_id!r}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/v2"
    finally:
        server.shutdown()
        server.server_close()


def _deploy(base_url: str, **changes: Any) -> runpod_deploy.Outcome:
    deployment = runpod_deploy.RunPodDeployment(**{"image": "registry.example/tts:abc", **changes})
    api = runpod_deploy.RunPodRest(api_key="rp-key", base_url=base_url)
    return runpod_deploy.ensure(api, deployment)


def test_the_first_run_creates_the_template_and_the_endpoint(
    fake: tuple[FakeRunPodV2, str],
) -> None:
    state, url = fake
    outcome = _deploy(url)
    assert (outcome.template_action, outcome.endpoint_action) == ("created", "created")
    assert [(m, p) for m, p, _ in state.writes] == [
        ("POST", "/v2/templates"),
        ("POST", "/v2/serverless"),
    ]
    template = state.templates[outcome.template_id]
    assert template["serverless"] is True
    assert (template["startSsh"], template["startJupyter"]) == (False, False)
    assert template["image"] == "registry.example/tts:abc"
    endpoint = state.endpoints[outcome.endpoint_id]
    # The endpoint carries the container itself: v2 keeps no link to a template.
    assert endpoint["image"] == "registry.example/tts:abc"
    assert endpoint["disk"] == 40
    assert endpoint["type"] == "QUEUE"
    assert endpoint["gpu"]["pools"] == ["ADA_24", "ADA_48_PRO"]
    assert endpoint["gpu"]["minCudaVersion"] == "13.0"
    assert endpoint["timeout"] == 600_000
    assert endpoint["flashboot"] == "FLASHBOOT"
    assert state.auth == {"Bearer rp-key"}


def test_a_second_run_writes_nothing(fake: tuple[FakeRunPodV2, str]) -> None:
    state, url = fake
    first = _deploy(url)
    writes = len(state.writes)
    second = _deploy(url)
    assert (second.template_action, second.endpoint_action) == ("unchanged", "unchanged")
    assert (second.template_id, second.endpoint_id) == (first.template_id, first.endpoint_id)
    assert len(state.writes) == writes
    assert len(state.templates) == len(state.endpoints) == 1


def test_a_new_image_patches_the_template_and_the_endpoint_image_only(
    fake: tuple[FakeRunPodV2, str],
) -> None:
    state, url = fake
    first = _deploy(url)
    state.writes.clear()
    outcome = _deploy(url, image="registry.example/tts:def")
    assert outcome.template_id == first.template_id
    assert outcome.endpoint_id == first.endpoint_id
    image = {"image": "registry.example/tts:def"}
    assert state.writes == [
        ("PATCH", f"/v2/templates/{first.template_id}", image),
        ("PATCH", f"/v2/serverless/{first.endpoint_id}", image),
    ]
    state.writes.clear()
    _deploy(url, image="registry.example/tts:def")
    assert state.writes == []


def test_a_scaling_change_patches_only_the_endpoint_s_workers(
    fake: tuple[FakeRunPodV2, str],
) -> None:
    state, url = fake
    first = _deploy(url)
    state.writes.clear()
    outcome = _deploy(url, workers_max=5)
    assert outcome.template_action == "unchanged"
    assert outcome.endpoint_action == "updated (workers)"
    assert state.writes == [
        (
            "PATCH",
            f"/v2/serverless/{first.endpoint_id}",
            {"workers": {"min": 0, "max": 5, "idleTimeout": 5}},
        )
    ]
    assert len(state.endpoints) == 1


def test_a_field_the_answer_leaves_out_is_never_patched(fake: tuple[FakeRunPodV2, str]) -> None:
    """v1's check compared fields its answer did not return, and so patched on every run."""
    state, url = fake
    _deploy(url)
    state.leave_out = {"flashboot", "timeout"}
    state.writes.clear()
    outcome = _deploy(url)
    assert outcome.endpoint_action == "unchanged"
    assert state.writes == []


def test_the_differences_ignore_what_the_answer_adds_inside_objects() -> None:
    wanted = {"gpu": {"pools": ["ADA_24"], "count": 1, "minCudaVersion": "13.0"}, "timeout": 1}
    current = {
        "gpu": {
            "pools": ["ADA_24"],
            "count": 1,
            "allowedCudaVersions": [],
            "minCudaVersion": "13.0",
        },
        "timeout": 1,
        "createdAt": "2026-11-20T12:00:00Z",
    }
    assert runpod_deploy._differences(wanted, current) == {}
    assert runpod_deploy._differences({**wanted, "timeout": 2}, current) == {"timeout": 2}
    # Pools are one ordered selection: another order is a change, sent whole.
    moved = {"gpu": {"pools": ["ADA_48_PRO", "ADA_24"], "count": 1, "minCudaVersion": "13.0"}}
    assert runpod_deploy._differences(moved, current) == moved
    # env is ours as a whole: a variable RunPod holds and we no longer set is a change.
    assert runpod_deploy._differences({"env": {}}, {"env": {"OLD": "1"}}) == {"env": {}}


def test_the_strict_server_refuses_a_v1_shaped_body(fake: tuple[FakeRunPodV2, str]) -> None:
    """What v1 accepted (``imageName``, ``gpuTypeIds``…) is an unknown field to v2."""
    _, url = fake
    api = runpod_deploy.RunPodRest(api_key="k", base_url=url)
    with pytest.raises(runpod_deploy.RunPodDeployError, match="additional properties 'imageName'"):
        api.create_template({"name": "t", "image": "i", "imageName": "i"})


def test_two_templates_of_one_name_are_refused(fake: tuple[FakeRunPodV2, str]) -> None:
    state, url = fake
    for template_id in ("t1", "t2"):
        state.templates[template_id] = {"id": template_id, "name": "qwen3-tts-worker"}
    with pytest.raises(runpod_deploy.RunPodDeployError, match="several RunPod templates"):
        _deploy(url)


def test_an_api_error_names_the_call_and_the_problem(fake: tuple[FakeRunPodV2, str]) -> None:
    _, url = fake
    api = runpod_deploy.RunPodRest(api_key="k", base_url=url)
    with pytest.raises(
        runpod_deploy.RunPodDeployError, match=r"PATCH /serverless/nope: HTTP 404: Not Found"
    ):
        api.update_endpoint("nope", {"workers": {"max": 1}})


def test_the_base_path_is_a_setting(fake: tuple[FakeRunPodV2, str]) -> None:
    """The default is v2's; a client on the retired v1 base finds nothing there."""
    assert runpod_deploy.REST_BASE_URL == "https://api.runpod.io/v2"
    _, url = fake
    v1 = runpod_deploy.RunPodRest(api_key="k", base_url=url.removesuffix("/v2") + "/v1")
    with pytest.raises(runpod_deploy.RunPodDeployError, match="HTTP 404"):
        v1.templates()


def test_the_command_line_deploys_once_then_changes_nothing(
    fake: tuple[FakeRunPodV2, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m infra runpod deploy`` end to end (no docker build): the base URL from
    RUNPOD_REST_BASE_URL, the endpoint id into Terraform's tfvars; the second run writes
    nothing, on RunPod or on disk."""
    state, url = fake
    monkeypatch.setenv("RUNPOD_API_KEY", "rp-key")
    monkeypatch.setenv("RUNPOD_REST_BASE_URL", url)
    tfvars = tmp_path / "runpod.auto.tfvars.json"
    argv = [
        "runpod", "deploy", "--project", "proj", "--region", "us-central1",
        "--image-repo", "registry.example/tts", "--tag", "abc", "--skip-build",
        "--tfvars", str(tfvars),
    ]  # fmt: skip
    assert infra_main(argv) == 0
    (endpoint_id,) = state.endpoints
    assert json.loads(tfvars.read_text())["runpod_endpoint_id"] == endpoint_id
    writes, written = len(state.writes), tfvars.stat().st_mtime_ns
    assert infra_main(argv) == 0
    assert len(state.writes) == writes == 2
    assert tfvars.stat().st_mtime_ns == written


def test_terraform_gets_the_endpoint_and_the_webhook_url(tmp_path: Path) -> None:
    url = runpod_deploy.webhook_url(topology.load(), project_id="proj", region="us-central1")
    assert url == "https://us-central1-proj.cloudfunctions.net/tts-runpod-webhook"
    path = tmp_path / "runpod.auto.tfvars.json"
    assert runpod_deploy.write_tfvars(path, endpoint_id="ep1", webhook=url)
    assert json.loads(path.read_text()) == {
        "runpod_endpoint_id": "ep1",
        "runpod_webhook_url": url,
    }
    assert not runpod_deploy.write_tfvars(path, endpoint_id="ep1", webhook=url)
