"""infra/terraform, checked without a cloud: formatting, checkov, and that it creates exactly the
topology ``topology.yaml`` declares (providers cannot be downloaded here, so no init/validate).

``make test`` builds ``.venv-iac`` (checkov) and sets ``TTS_REQUIRE_IAC=1``, so there a missing
tool fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra import topology

ROOT = Path(__file__).resolve().parents[2]
TF_DIR = ROOT / "infra" / "terraform"
CHECKOV = ROOT / ".venv-iac" / "bin" / "checkov"

# Each kind of thing topology.yaml declares: the one resource block that creates it, the local
# it iterates over, and the topology section that local must come from.
DECLARED = {
    "google_pubsub_topic": ("topic", "local.topics", "local.topology.topics"),
    "google_pubsub_subscription": (
        "subscription",
        "local.subscriptions",
        "local.topology.subscriptions",
    ),
    "google_cloudfunctions2_function": ("function", "local.functions", "local.topology.functions"),
    "google_cloud_scheduler_job": ("schedule", "local.schedules", "local.topology.schedules"),
    "google_firestore_index": ("composite", "local.indexes", "local.topology.firestore.indexes"),
    "google_firestore_field": ("ttl", "local.ttl_fields", "local.topology.firestore.ttl"),
}
# Other ways to make a topic, subscription, function, trigger or schedule: none may appear.
FORBIDDEN = {
    "google_cloudfunctions_function",
    "google_cloud_run_service",
    "google_cloud_run_v2_service",
    "google_eventarc_trigger",
    "google_pubsub_lite_topic",
    "google_pubsub_lite_subscription",
    "google_cloud_tasks_queue",
}


def _require(tool: str) -> None:
    if os.environ.get("TTS_REQUIRE_IAC") == "1":
        pytest.fail(f"{tool} is missing; `make iac-venv` installs it")
    pytest.skip(f"{tool} is not installed here (`make iac-venv`)")


def _unquote(key: str) -> str:
    return key.strip('"')


def _parsed() -> dict[str, list[dict[str, Any]]]:
    hcl2 = pytest.importorskip("hcl2")
    merged: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(TF_DIR.glob("*.tf")):
        for key, value in hcl2.loads(path.read_text()).items():
            merged.setdefault(key, []).extend(value)
    return merged


def _resources() -> dict[str, dict[str, dict[str, Any]]]:
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for block in _parsed().get("resource", []):
        for rtype, named in block.items():
            for name, body in named.items():
                found.setdefault(_unquote(rtype), {})[_unquote(name)] = body
    return found


def _locals() -> dict[str, str]:
    merged: dict[str, str] = {}
    for block in _parsed().get("locals", []):
        merged.update({k: str(v) for k, v in block.items()})
    return merged


def test_terraform_is_formatted() -> None:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("no terraform binary here")
    result = subprocess.run(
        [binary, "fmt", "-check", "-recursive", "-diff", str(TF_DIR)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_checkov_finds_nothing_and_every_skip_says_why() -> None:
    if not CHECKOV.exists():
        _require("checkov")
    command = [str(CHECKOV), "-d", str(TF_DIR), "--framework", "terraform"]
    # --skip-download: no calls to the vendor's platform (no network on CI runners either).
    command += ["--skip-download", "--output", "json"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0, failed
    assert summary["passed"] > 0
    for skipped in report["results"]["skipped_checks"]:
        reason = skipped["check_result"].get("suppress_comment", "")
        assert len(reason) > 20, skipped["check_id"]
    # Skips are written beside their resource, with the reason after the id.
    for path in TF_DIR.glob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                assert re.search(r"#checkov:skip=CKV_\w+:\S.{20,}", line), (path.name, line)


def test_each_declared_kind_is_one_for_each_over_its_topology_section() -> None:
    resources = _resources()
    local_exprs = _locals()
    assert "yamldecode(file(" in local_exprs["topology"]
    assert "topology.yaml" in local_exprs["topology"]
    for rtype, (name, source, section) in DECLARED.items():
        assert set(resources.get(rtype, {})) == {name}, f"{rtype}: only {name}, from the yaml"
        body = resources[rtype][name]
        assert body["for_each"] == "${" + source + "}", rtype
        local_name = source.removeprefix("local.")
        expr = local_exprs[local_name]
        assert section in expr, f"local.{local_name} must iterate {section}"
    assert not FORBIDDEN & set(resources), FORBIDDEN & set(resources)


def test_no_topic_subscription_or_function_is_named_outside_the_topology() -> None:
    """References into the for_each maps use each/locals, never a literal name."""
    literal = re.compile(
        r"google_(pubsub_topic\.topic|pubsub_subscription\.subscription"
        r"|cloudfunctions2_function\.function|cloud_scheduler_job\.schedule)\[\s*\""
    )
    names = {t.name for t in topology.load().topics} | {
        s.name for s in topology.load().subscriptions
    }
    names |= {f.name for f in topology.load().functions}
    for path in TF_DIR.glob("*.tf"):
        text = path.read_text()
        assert not literal.search(text), path.name
        code = "\n".join(line.split("#")[0] for line in text.splitlines())
        for declared in names:
            assert f'"{declared}"' not in code, (path.name, declared)


def test_the_function_defaults_match_the_topology_models() -> None:
    """Terraform's try() defaults are the pydantic models' defaults."""
    expr = _locals()["functions"]
    fields = topology.Function.model_fields
    for field in ("memory", "concurrency", "timeout_s", "retry", "public"):
        default = fields[field].default
        literal = json.dumps(default) if not isinstance(default, bool) else str(default).lower()
        assert f"try(f.{field}, {literal})" in expr, field
    sub = _locals()["subscriptions"]
    for field in ("ack_deadline_s", "message_retention_s"):
        assert f"try(s.{field}, {topology.Subscription.model_fields[field].default})" in sub


def _console(expression: str, tmp_path: Path, *, endpoint_id: str = "") -> Any:
    """Evaluate ``expression`` over topology.tf's locals with the real terraform (no providers
    needed: only the locals and the variables they read are copied)."""
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("no terraform binary here")
    text = (TF_DIR / "topology.tf").read_text()
    text = text.replace("${path.module}/../topology.yaml", str(ROOT / "infra" / "topology.yaml"))
    (tmp_path / "topology.tf").write_text(text)
    (tmp_path / "variables.tf").write_text(
        'variable "project_id" {\n  default = "p"\n}\n'
        'variable "bucket_name" {\n  default = "b"\n}\n'
        f'variable "runpod_endpoint_id" {{\n  default = "{endpoint_id}"\n}}\n'
        'variable "runpod_webhook_url" {\n  default = ""\n}\n'
        'variable "reply_topics" {\n  default = []\n}\n'
        'variable "environment" {\n  default = {}\n}\n'
    )
    result = subprocess.run(
        [binary, "console"],
        input=f"jsonencode({expression})\n",
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull},
    )
    return json.loads(json.loads(result.stdout.strip()))


def test_terraform_creates_exactly_what_the_topology_declares(tmp_path: Path) -> None:
    declared = topology.load()
    keys = _console(
        "{ topics = keys(local.topics), subscriptions = keys(local.subscriptions),"
        " functions = keys(local.functions), schedules = keys(local.schedules),"
        " ttl = keys(local.ttl_fields), indexes = length(local.indexes),"
        " secrets = local.secrets, region = local.region, pushed = local.pushed_functions,"
        " dead_letter_topics = local.dead_letter_topics, audio_days = local.audio_days }",
        tmp_path,
    )
    assert sorted(keys["topics"]) == sorted(t.name for t in declared.topics)
    assert sorted(keys["subscriptions"]) == sorted(s.name for s in declared.subscriptions)
    assert sorted(keys["functions"]) == sorted(f.name for f in declared.functions)
    assert sorted(keys["schedules"]) == sorted(s.name for s in declared.schedules)
    assert sorted(keys["ttl"]) == sorted(
        f"{t.collection}.{t.field}" for t in declared.firestore.ttl
    )
    assert keys["indexes"] == len(declared.firestore.indexes)
    assert sorted(keys["secrets"]) == sorted(
        {s for f in declared.functions for s in f.secrets.values()}
    )
    assert keys["region"] == declared.bucket.location.lower()
    assert sorted(keys["pushed"]) == sorted(
        {s.push_function for s in declared.subscriptions if s.push_function}
    )
    assert sorted(keys["dead_letter_topics"]) == sorted(
        {s.dead_letter.topic for s in declared.subscriptions if s.dead_letter}
    )
    audio = next(r.age_days for r in declared.bucket.expire if r.prefix == "audio/")
    assert keys["audio_days"] == audio


def test_runpod_switches_on_with_its_endpoint(tmp_path: Path) -> None:
    env = _console("local.environment", tmp_path)
    assert [b["id"] for b in json.loads(env["TTS_BACKENDS"])] == ["home-4090"]
    assert env["TTS_RUNPOD__ENDPOINT_ID"] == ""
    assert env["TTS_RETENTION__AUDIO_DAYS"] == "30"
    # The Settings object parses what Terraform writes (a JSON list with commas, as a map value).
    from shared.settings import Settings

    settings = Settings.model_validate({"backends": json.loads(env["TTS_BACKENDS"])})
    assert settings.backend("home-4090") is not None

    on = _console("local.environment", tmp_path, endpoint_id="abc123")
    assert [b["id"] for b in json.loads(on["TTS_BACKENDS"])] == ["home-4090", "runpod"]
    assert on["TTS_RUNPOD__ENDPOINT_ID"] == "abc123"
    assert on["TTS_RUNPOD__WEBHOOK_URL"] == (
        "https://us-central1-p.cloudfunctions.net/tts-runpod-webhook"
    )
