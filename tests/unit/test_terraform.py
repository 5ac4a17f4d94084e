"""infra/terraform, checked without a cloud: formatting, checkov, and that it creates exactly the
topology ``topology.yaml`` declares (providers cannot be downloaded here, so no init/validate).

``make test`` builds ``.venv-iac`` (checkov) and sets ``TTS_REQUIRE_IAC=1``, so there a missing
tool fails instead of skipping.
"""

from __future__ import annotations

import functools
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


@functools.cache  # the .tf files do not change during a run; read-only to the tests
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
    # Checkov expands each grant of a map (it cannot while a map entry reads a variable or
    # local.member): each is checked with its own role.
    checked = {c["resource"] for c in report["results"]["passed_checks"]}
    for rtype, name in GRANT_MAPS.items():
        assert {f'{rtype}.grant["{key}"]' for key in _local_map(name)} <= checked, rtype
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
    # The real variables, their defaults and validations; the two required ones given here.
    shutil.copy(TF_DIR / "variables.tf", tmp_path / "variables.tf")
    result = subprocess.run(
        [
            binary,
            "console",
            "-var",
            "project_id=p",
            "-var",
            "bucket_name=b",
            "-var",
            f"runpod_endpoint_id={endpoint_id}",
        ],
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
        " dead_letter_topics = local.dead_letter_topics, audio_days = local.audio_days,"
        " ttl_databases = { for k, t in local.ttl_fields : k => t.database },"
        " keys_database = local.keys_database }",
        tmp_path,
    )
    assert sorted(keys["topics"]) == sorted(t.name for t in declared.topics)
    assert sorted(keys["subscriptions"]) == sorted(s.name for s in declared.subscriptions)
    assert sorted(keys["functions"]) == sorted(f.name for f in declared.functions)
    assert sorted(keys["schedules"]) == sorted(s.name for s in declared.schedules)
    assert sorted(keys["ttl"]) == sorted(
        f"{t.collection}.{t.field}" for t in declared.firestore.ttl
    )
    assert keys["ttl_databases"] == {
        f"{t.collection}.{t.field}": t.database for t in declared.firestore.ttl
    }
    assert keys["keys_database"] == declared.firestore.keys_database != "(default)"
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


def test_the_functions_environment_names_the_voices_bucket_and_the_keys_database(
    tmp_path: Path,
) -> None:
    """What Terraform writes is what Settings reads: voice files in their own bucket (the one
    storage triggers watch), keys in their own database, traces exported to Google's."""
    from shared.settings import Settings

    env = _console("local.environment", tmp_path)
    settings = Settings.model_validate(
        {
            "bucket": env["TTS_BUCKET"],
            "voices": {"bucket": env["TTS_VOICES__BUCKET"]},
            "keys_database": env["TTS_KEYS_DATABASE"],
        }
    )
    assert settings.voices_bucket == "b-voices" != settings.bucket
    assert settings.keys_database == topology.load().firestore.keys_database
    assert env["TTS_TRACING__EXPORTER"] == "gcp"


# ---- Deploy blockers and runtime defects, read from the parsed HCL (python-hcl2) ----


def _resource(rtype: str, name: str) -> dict[str, Any]:
    return _resources()[rtype][name]


def _text(value: Any) -> str:
    """An HCL string as python-hcl2 gives it (quoted, escaped), as the string it is."""
    text = str(value)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('\\"', '"')
    return text


def _dynamic(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``dynamic "name"`` block of a resource."""
    (found,) = [
        block for entry in body["dynamic"] for key, block in entry.items() if _unquote(key) == name
    ]
    return dict(found)


def _block(body: dict[str, Any], name: str) -> dict[str, Any]:
    (block,) = body[name]
    return dict(block)


def _local_map(name: str) -> dict[str, dict[str, Any]]:
    """A ``locals`` map of objects written out in HCL (grants keyed by what each is for)."""
    (found,) = [block[name] for block in _parsed()["locals"] if name in block]
    return {key: value for key, value in found.items() if not key.startswith("__")}


# The grants with fixed names: one resource per kind, over the locals map of that kind.
GRANT_MAPS = {
    "google_project_iam_member": "project_grants",
    "google_storage_bucket_iam_member": "bucket_grants",
}


def _grants(rtype: str) -> dict[str, dict[str, Any]]:
    """Every grant of one kind by name: each separate resource, and each entry of the map its
    ``grant`` resource iterates over (role and condition from the entry, the member named by its
    ``who``, given here as the ``local.member`` reference a separate resource would write)."""
    grants = {name: body for name, body in _resources()[rtype].items() if name != "grant"}
    if rtype in GRANT_MAPS:
        grant = _resource(rtype, "grant")
        assert grant["for_each"] == "${local." + GRANT_MAPS[rtype] + "}"
        assert grant["role"] == "${each.value.role}"
        assert grant["member"] == "${local.member[each.value.who]}"
        for name, entry in _local_map(GRANT_MAPS[rtype]).items():
            grants[name] = {**entry, "member": "${local.member." + _text(entry["who"]) + "}"}
    return grants


def test_functions_build_as_a_named_account_with_the_roles_a_build_needs() -> None:
    function = _resource("google_cloudfunctions2_function", "function")
    build = _block(function, "build_config")
    assert build["service_account"] == '${google_service_account.account["build"].id}'
    assert "build" in _local_map("service_accounts")
    roles = {
        _text(body["role"])
        for rtype in ("google_project_iam_member", "google_storage_bucket_iam_member")
        for body in _grants(rtype).values()
        if str(body["member"]) == "${local.member.build}"
    }
    # Google's list for a custom build account: logs, images, the source objects.
    assert roles == {
        "roles/logging.logWriter",
        "roles/artifactregistry.writer",
        "roles/storage.objectAdmin",
        "roles/storage.objectViewer",
    }


def test_the_source_generation_comes_from_the_uploaded_object() -> None:
    build = _block(_resource("google_cloudfunctions2_function", "function"), "build_config")
    storage = _block(_block(build, "source"), "storage_source")
    assert storage["generation"] == (
        "${google_storage_bucket_object.function_source[each.key].generation}"
    )


def test_pubsub_pushes_to_the_run_app_url_and_signs_for_it() -> None:
    """The pushed functions take internal traffic only; Pub/Sub is internal only on run.app."""
    subscription = _resource("google_pubsub_subscription", "subscription")
    (push,) = _dynamic(subscription, "push_config")["content"]
    run_app = "${google_cloudfunctions2_function.function[push_config.value].service_config[0].uri}"
    assert push["push_endpoint"] == run_app
    assert _block(push, "oidc_token")["audience"] == run_app
    assert ".url" not in str(subscription)


def test_functions_wait_for_the_agents_and_grants_of_a_first_apply() -> None:
    identity = _resource("google_project_service_identity", "agent")
    assert "eventarc" in identity["for_each"]
    assert _text(identity["service"]) == "${each.key}.googleapis.com"
    agent = _resource("google_project_iam_member", "eventarc_agent")
    assert _text(agent["role"]) == "roles/eventarc.serviceAgent"
    assert agent["member"] == "${local.member.eventarc_agent}"
    (members,) = [block["member"] for block in _parsed()["locals"] if "member" in block]
    assert 'eventarc_agent = "serviceAccount:${google_project_service_identity.agent' in members
    wait = _resource("time_sleep", "grants_propagate")
    waited = {str(d).strip("${}") for d in wait["depends_on"]}
    # The grant resources whole: each waits for every entry of its map.
    assert {
        "google_project_iam_member.eventarc_agent",
        "google_project_iam_member.grant",
        "google_storage_bucket_iam_member.grant",
        "google_service_account_iam_member.grant",
        "google_secret_manager_secret_iam_member.functions_secret",
    } <= waited
    assert {"gcs_agent_publisher", "build_logs", "build_images", "build_staging"} <= set(
        _local_map("project_grants")
    )
    assert "build_sources" in _local_map("bucket_grants")
    function = _resource("google_cloudfunctions2_function", "function")
    assert "${time_sleep.grants_propagate}" in function["depends_on"]


def test_each_moved_block_leads_a_removed_resource_to_an_entry_of_its_family() -> None:
    """moved.tf: what iam.tf made as separate resources (or instances keyed otherwise) is moved
    to its entry of the one resource over a map, so an applied state is moved, not destroyed and
    made again. Each old address is gone, each new one is an entry that exists."""
    resources = _resources()
    address = re.compile(r'\$\{(\w+)\.(\w+)(?:\["(\w+)"\])?\}')
    moves = [(str(m["from"]), str(m["to"])) for m in _parsed()["moved"]]
    assert (
        len({source for source, _ in moves}) == len({target for _, target in moves}) == len(moves)
    )
    for source, target in moves:
        old, new = address.fullmatch(source), address.fullmatch(target)
        assert old, source
        assert new, target
        assert old[1] == new[1], source  # same type
        assert old[2] not in resources[old[1]], f"{source} is still declared"
        assert new[3] is not None, target  # an entry of a for_each
        keys: Any = str(resources[new[1]][new[2]]["for_each"])
        if local := re.fullmatch(r"\$\{local\.(\w+)\}", keys):
            (keys,) = [block[local[1]] for block in _parsed()["locals"] if local[1] in block]
        if isinstance(keys, dict):  # a map written out
            assert new[3] in keys, target
        else:  # an expression: the key, or the account a for over the accounts makes it of
            key = new[3].removeprefix("deployer_act_as_")
            assert f"{key} = " in keys or f'"{key}"' in keys, target


def test_no_unused_project_data_source() -> None:
    data = {_unquote(t) for block in _parsed().get("data", []) for t in block}
    assert "google_project" not in data


def test_public_functions_can_do_without_all_users() -> None:
    """Where the organisation restricts policy members to its domains, allUsers is refused:
    public_invoker = "none" leaves the grant out (README, Deploying, says what to do then)."""
    grant = _resource("google_cloud_run_v2_service_iam_member", "public_invoker")
    assert grant["for_each"] == (
        '${var.public_invoker == "allUsers" ? local.public_functions : {}}'
    )
    readme = (ROOT / "README.md").read_text()
    assert "iam.allowedPolicyMemberDomains" in readme
    assert "public_invoker" in readme


# ---- Security and cost ----


def _home_worker_grants() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (rtype, name, body)
        for rtype in _resources()
        for name, body in _grants(rtype).items()
        if "local.member.home_worker" in str(body.get("member", ""))
    ]


def test_the_home_worker_reaches_the_default_database_only() -> None:
    firestore = _grants("google_project_iam_member")["home_worker_firestore"]
    expression = _text(firestore["condition"]["expression"])
    assert expression == 'resource.name == "${local.default_database}"'
    assert _text(_locals()["default_database"]) == "projects/${var.project_id}/databases/(default)"
    # The grant resource writes an entry's condition, whole, where the entry has one.
    (condition,) = _dynamic(_resource("google_project_iam_member", "grant"), "condition")["content"]
    assert {k: v for k, v in condition.items() if not k.startswith("__")} == {
        field: "${condition.value." + field + "}"
        for field in ("title", "description", "expression")
    }
    keys = _resource("google_firestore_database", "keys")
    assert keys["name"] == "${local.keys_database}"
    # Every project-wide grant of the worker is conditioned, but the trace and log writers'.
    for rtype, name, body in _home_worker_grants():
        if rtype == "google_project_iam_member" and name not in (
            "home_worker_trace",
            "home_worker_logs",
        ):
            assert "condition" in body, name


def test_the_home_worker_reaches_its_own_prefixes_only() -> None:
    """IAM conditions on object names, with the prefixes the code uses."""
    from shared.settings import Settings

    settings = Settings()
    bucket_grants = [
        (name, body)
        for rtype, name, body in _home_worker_grants()
        if rtype == "google_storage_bucket_iam_member"
    ]
    assert [name for name, _ in bucket_grants] == ["home_worker_objects"]
    (_, grant) = bucket_grants[0]
    assert grant["for_each"] == "${local.home_worker_objects}"
    expression = _text(_block(grant, "condition")["expression"])
    assert "/objects/${each.value.prefix}" in expression
    assert expression.startswith("resource.name.startsWith(")
    objects = next(
        block["home_worker_objects"]
        for block in _parsed()["locals"]
        if "home_worker_objects" in block
    )
    prefixes = {_text(o["prefix"]): _text(o["role"]) for o in objects.values()}
    assert prefixes == {
        settings.audio_prefix: "roles/storage.objectUser",
        settings.voices.upload_prefix: "roles/storage.objectViewer",
        settings.voices.prefix: "roles/storage.objectUser",
        settings.voices.quarantine_prefix: "roles/storage.objectCreator",
    }
    voices = topology.load().voices_bucket
    assert voices is not None
    assert set(voices.prefixes) == {settings.voices.prefix, settings.voices.quarantine_prefix}


def test_voice_files_have_the_only_bucket_storage_triggers_watch() -> None:
    function = _resource("google_cloudfunctions2_function", "function")
    storage_trigger = next(
        block
        for entry in function["dynamic"]
        for key, block in entry.items()
        if _unquote(key) == "event_trigger" and "storage" in str(block["for_each"])
    )
    (filters,) = storage_trigger["content"][0]["event_filters"]
    assert filters["value"] == "${google_storage_bucket.voices.name}"
    voices = _resource("google_storage_bucket", "voices")
    assert voices["location"] == "${local.topology.bucket.location}"


def test_lifecycle_deleted_audio_is_not_kept_by_soft_delete() -> None:
    assert topology.load().bucket.soft_delete_days == 0
    data = _resource("google_storage_bucket", "data")
    (soft,) = _dynamic(data, "soft_delete_policy")["content"]
    assert soft["retention_duration_seconds"] == "${soft_delete_policy.value * 86400}"


def test_the_audio_cache_expires_with_the_audio() -> None:
    ttl = {(t.collection, t.field) for t in topology.load().firestore.ttl}
    assert ("audio_cache", "expires_at") in ttl


def test_the_deployer_holds_no_broad_role_and_grants_only_what_terraform_grants() -> None:
    """infra/deployer.sh: no editor, owner or securityAdmin; its projectIamAdmin is
    conditioned to exactly the roles iam.tf grants on the project."""
    script = (ROOT / "infra" / "deployer.sh").read_text()

    def array(name: str) -> set[str]:
        body = script.split(f"{name}=(", 1)[1].split(")", 1)[0]
        return {line.split("#")[0].strip() for line in body.splitlines()} - {""}

    roles = array("ROLES")
    assert not roles & {"roles/editor", "roles/owner", "roles/iam.securityAdmin"}
    assert "roles/iam.serviceAccountUser" not in roles  # act-as is per account (iam.tf)
    granted = {_text(body["role"]) for body in _grants("google_project_iam_member").values()}
    assert array("GRANTABLE") == granted
    assert "modifiedGrantsByRole" in script
    readme = (ROOT / "README.md").read_text()
    assert "infra/deployer.sh" in readme
    assert "roles/editor" not in readme


# ---- Operations: log-based metrics read lines the code writes; alerts and their runbook ----


def _logged_lines() -> dict[str, set[str]]:
    """Each log message the code writes (a literal first argument of log.info/warning/error),
    with the fields its ``extra=`` dict literal names."""
    import ast

    lines: dict[str, set[str]] = {}
    for folder in ("shared", "functions", "gpu_worker"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in {"info", "warning", "error", "critical", "exception"}
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    continue
                fields = lines.setdefault(node.args[0].value, set())
                for keyword in node.keywords:
                    if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                        fields |= {
                            k.value
                            for k in keyword.value.keys
                            if isinstance(k, ast.Constant) and isinstance(k.value, str)
                        }
    # "job ended" passes a computed dict: the fields of a job that ran and made audio.
    lines["job ended"] |= set(_ended_fields_of_a_finished_job())
    return lines


def _ended_fields_of_a_finished_job() -> dict[str, object]:
    from datetime import UTC, datetime, timedelta

    from shared.domain.jobs import AudioResult, Job, JobState
    from shared.domain.synthesis import CustomVoiceRequest
    from shared.usecases.completion import ended_fields

    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    job = Job(
        id="j",
        owner="o",
        request=CustomVoiceRequest(text="Hi.", speaker="Ryan"),
        state=JobState.SUCCEEDED,
        backend="home-4090",
        created_at=t0,
        updated_at=t0 + timedelta(seconds=5),
        state_times={
            JobState.RUNNING: t0 + timedelta(seconds=2),
            JobState.SUCCEEDED: t0 + timedelta(seconds=5),
        },
        result=AudioResult(
            uri="gs://b/audio/j/1.wav",
            format="wav",
            content_type="audio/wav",
            sample_rate=24000,
            duration_s=6.0,
            bytes=1,
        ),
    )
    fields = ended_fields(job)
    assert fields["queue_s"] == 2.0
    assert fields["run_s"] == 3.0
    assert fields["rtf"] == 0.5  # three seconds of work for six of audio
    assert fields["ttfa_s"] == 5.0  # not streamed: its audio came at its end
    assert (fields["mode"], fields["backend"], fields["outcome"]) == (
        "custom_voice",
        "home-4090",
        "succeeded",
    )
    return fields


def _log_metrics() -> dict[str, dict[str, Any]]:
    (block,) = [b for b in _parsed()["locals"] if "log_counters" in b]
    return {**block["log_counters"], **block["log_distributions"]}


def test_every_log_metric_reads_a_line_and_fields_the_code_writes() -> None:
    lines = _logged_lines()
    for name, metric in _log_metrics().items():
        query = _text(metric["filter"])
        messages = re.findall(r'"([^"]+)"', query.split("jsonPayload.message=", 1)[-1])
        if "jsonPayload.message=" not in query:
            messages = []
        fields = {_text(label) for label in metric["labels"]}
        fields |= set(re.findall(r"jsonPayload\.(\w+)(?::\*|=)", query)) - {"message"}
        if "field" in metric:
            fields.add(_text(metric["field"]))
        carriers = messages or [m for m, f in lines.items() if fields <= f]
        assert carriers, f"{name}: no line of the code carries {sorted(fields)}"
        for message in carriers:
            assert message in lines, f"{name}: the code never logs {message!r}"
            missing = fields - lines[message] - {"message"}
            assert not missing, f"{name}: {message!r} has no {sorted(missing)}"


def test_time_to_first_audio_comes_from_streamed_and_unstreamed_jobs() -> None:
    lines = _logged_lines()
    assert {"ttfa_s", "mode", "backend"} <= lines["first audio"]
    assert "ttfa_s" in lines["job ended"]


def test_the_monitored_queues_are_found_by_what_they_are(tmp_path: Path) -> None:
    declared = topology.load()
    found = _console(
        "{ queues = local.backend_queues, audits = local.dead_letter_audits,"
        " api = local.api_function }",
        tmp_path,
    )
    dead_letter_topics = {s.dead_letter.topic for s in declared.subscriptions if s.dead_letter}
    assert sorted(found["queues"]) == sorted(
        s.name for s in declared.subscriptions if s.filter.startswith("attributes.backend")
    )
    assert len(found["queues"]) == 2  # the 4090's and RunPod's
    assert sorted(found["audits"]) == sorted(
        s.name for s in declared.subscriptions if s.topic in dead_letter_topics and not s.filter
    )
    assert len(found["audits"]) == len(dead_letter_topics)
    assert found["api"] == next(f.name for f in declared.functions if f.entry_point == "api")


ALERTS = {
    "api_burn": "API availability",
    "queue_age": "queue age",
    "dead_letters": "dead letters",
    "backend_down": "backend down",
    "monitor_silent": "monitor silent",
}


def test_the_alerts_the_operations_need_each_with_its_runbook() -> None:
    policies = _resources()["google_monitoring_alert_policy"]
    assert set(policies) == set(ALERTS)
    slo = _resource("google_monitoring_slo", "api_availability")
    assert slo["goal"] == 0.999
    burn = {
        _unquote(k): v
        for block in _parsed()["locals"]
        if "burn_alerts" in block
        for k, v in block["burn_alerts"].items()
    }
    assert {b["rate"] for b in burn.values()} == {14.4, 6}
    (runbook,) = [b["runbook"] for b in _parsed()["locals"] if "runbook" in b]
    assert "README.md" in runbook
    assert "Operating it" in runbook
    readme = (ROOT / "README.md").read_text()
    operations = readme.split("## Operating it", 1)[1].split("\n## ", 1)[0]
    for name, heading in ALERTS.items():
        assert "${local.runbook}" in str(policies[name]["documentation"]), name
        assert f"**{heading.capitalize()}" in operations or f"**{heading}" in operations, heading
    wait = _resource("google_monitoring_alert_policy", "backend_down")
    (condition,) = wait["conditions"]
    assert condition["condition_threshold"][0]["duration"] == (
        '"${var.backend_down_minutes * 60}s"'
    )
