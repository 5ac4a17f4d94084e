"""``python -m infra runpod deploy`` against a fake of RunPod's REST API on 127.0.0.1: the real
HTTP client, a second run changes nothing, a change patches only what differs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from infra import runpod_deploy, topology


class FakeRunPod:
    """``/templates`` and ``/endpoints`` as RunPod's REST API (v1) answers them."""

    def __init__(self) -> None:
        self.templates: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str, dict[str, Any]]] = []
        self.auth: set[str] = set()
        self._ids = 0

    def new_id(self) -> str:
        self._ids += 1
        return f"id{self._ids:04d}"


@pytest.fixture
def fake() -> Iterator[tuple[FakeRunPod, str]]:
    state = FakeRunPod()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            return dict(json.loads(self.rfile.read(length) or b"{}"))

        def do_GET(self) -> None:
            state.auth.add(self.headers.get("Authorization", ""))
            path, _, query = self.path.partition("?")
            if path == "/templates":
                # Like RunPod: templates an endpoint uses are listed only when asked for.
                bound = {e["templateId"] for e in state.endpoints.values()}
                wanted = "includeEndpointBoundTemplates=true" in query
                self._send(
                    200, [t for t in state.templates.values() if wanted or t["id"] not in bound]
                )
            elif path == "/endpoints":
                self._send(200, list(state.endpoints.values()))
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = self._body()
            state.writes.append(("POST", self.path, body))
            if self.path == "/templates":
                item = {"id": state.new_id(), "env": {}, "isRunpod": False, **body}
                state.templates[item["id"]] = item
            elif self.path == "/endpoints":
                item = {"id": state.new_id(), **body}
                if body.get("flashboot"):
                    item["name"] = f"{body['name']} -fb"  # what RunPod has shown
                state.endpoints[item["id"]] = item
            else:
                self._send(404, {"error": "not found"})
                return
            self._send(200, item)

        def do_PATCH(self) -> None:
            body = self._body()
            state.writes.append(("PATCH", self.path, body))
            kind, _, item_id = self.path.strip("/").partition("/")
            items = state.templates if kind == "templates" else state.endpoints
            if item_id not in items:
                self._send(404, {"error": "not found"})
                return
            items[item_id].update(body)
            self._send(200, items[item_id])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _deploy(base_url: str, **changes: Any) -> runpod_deploy.Outcome:
    deployment = runpod_deploy.RunPodDeployment(image="registry.example/tts:abc", **changes)
    api = runpod_deploy.RunPodRest(api_key="rp-key", base_url=base_url)
    return runpod_deploy.ensure(api, deployment)


def test_the_first_run_creates_the_template_and_the_endpoint_on_it(
    fake: tuple[FakeRunPod, str],
) -> None:
    state, url = fake
    outcome = _deploy(url)
    assert (outcome.template_action, outcome.endpoint_action) == ("created", "created")
    assert [(m, p) for m, p, _ in state.writes] == [("POST", "/templates"), ("POST", "/endpoints")]
    template = state.templates[outcome.template_id]
    assert template["isServerless"] is True
    assert template["imageName"] == "registry.example/tts:abc"
    endpoint = state.endpoints[outcome.endpoint_id]
    assert endpoint["templateId"] == outcome.template_id
    assert endpoint["minCudaVersion"] == "13.0"
    assert endpoint["executionTimeoutMs"] == 600_000
    assert state.auth == {"Bearer rp-key"}


def test_a_second_run_changes_nothing(fake: tuple[FakeRunPod, str]) -> None:
    state, url = fake
    first = _deploy(url)
    writes = len(state.writes)
    second = _deploy(url)
    assert (second.template_action, second.endpoint_action) == ("unchanged", "unchanged")
    assert (second.template_id, second.endpoint_id) == (first.template_id, first.endpoint_id)
    assert len(state.writes) == writes
    assert len(state.templates) == len(state.endpoints) == 1


def test_a_new_image_patches_only_the_template(fake: tuple[FakeRunPod, str]) -> None:
    state, url = fake
    first = _deploy(url)
    state.writes.clear()
    deployment = runpod_deploy.RunPodDeployment(image="registry.example/tts:def")
    api = runpod_deploy.RunPodRest(api_key="rp-key", base_url=url)
    outcome = runpod_deploy.ensure(api, deployment)
    assert outcome.template_id == first.template_id
    assert outcome.endpoint_action == "unchanged"
    assert state.writes == [
        ("PATCH", f"/templates/{first.template_id}", {"imageName": "registry.example/tts:def"})
    ]


def test_a_scaling_change_patches_only_the_endpoint(fake: tuple[FakeRunPod, str]) -> None:
    state, url = fake
    first = _deploy(url)
    state.writes.clear()
    outcome = _deploy(url, workers_max=5)
    assert outcome.template_action == "unchanged"
    assert state.writes == [("PATCH", f"/endpoints/{first.endpoint_id}", {"workersMax": 5})]
    assert len(state.endpoints) == 1


def test_two_templates_of_one_name_are_refused(fake: tuple[FakeRunPod, str]) -> None:
    state, url = fake
    for template_id in ("t1", "t2"):
        state.templates[template_id] = {"id": template_id, "name": "qwen3-tts-worker"}
    with pytest.raises(runpod_deploy.RunPodDeployError, match="several RunPod templates"):
        _deploy(url)


def test_an_api_error_names_the_call(fake: tuple[FakeRunPod, str]) -> None:
    _, url = fake
    api = runpod_deploy.RunPodRest(api_key="k", base_url=url)
    with pytest.raises(runpod_deploy.RunPodDeployError, match=r"PATCH /endpoints/nope: HTTP 404"):
        api.update_endpoint("nope", {"workersMax": 1})


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
