"""``python -m functions.keys`` as a person runs it against ``make run``: a subprocess in a
directory holding the stack's ``.devstack/env``, with no emulator variables of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from functions.tool_env import ENV_FILE, write_env_file
from infra.processes import free_port
from shared.domain.keys import Scope
from shared.settings import Settings
from shared.usecases.gateway import Gateway

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack_dir(tmp_path: Path, emulator_env: dict[str, str], cloud_settings: Settings) -> Path:
    """A directory as ``make run`` leaves the repository: its env file, naming these
    emulators, this test's collection prefix and the deployment's reply topics."""
    write_env_file(
        tmp_path / ENV_FILE,
        {
            **emulator_env,
            "TTS_BUCKET": cloud_settings.bucket,
            "TTS_COLLECTION_PREFIX": cloud_settings.collection_prefix,
            "TTS_REPLY_TOPICS": '["results-a", "results-b"]',
            "TTS_INTAKE__SIGNING_KEY": "the-stack's-throwaway-key",
        },
    )
    (tmp_path / "somewhere" / "below").mkdir(parents=True)
    return tmp_path


def keys(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Nothing of the emulators or the settings: only the file may supply them.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TTS_", "PUBSUB_", "FIRESTORE_", "STORAGE_", "GOOGLE_"))
    }
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "functions.keys", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_create_list_rotate_and_revoke_against_the_local_stack(
    stack_dir: Path, cloud_gateway: Gateway
) -> None:
    created = keys(stack_dir / "somewhere" / "below", "create", "--owner", "pipeline")
    assert created.returncode == 0, created.stderr
    api_key = created.stdout.strip()
    assert api_key.startswith("tts_")
    assert "\n" not in api_key  # stdout is the key alone
    [record] = cloud_gateway.keys.list_keys(owner="pipeline")  # in the stack's own store
    assert f"key id (signed Pub/Sub intake messages name it): {record.key_id}" in created.stderr
    assert "intake signing secret: tsig_" in created.stderr
    assert api_key not in created.stderr

    admin = keys(
        stack_dir,
        "create",
        "--owner",
        "ops",
        "--admin",
        "--reply-topic",
        "results-a",
        "--reply-topic",
        "results-b",
    )
    assert admin.returncode == 0, admin.stderr
    [ops] = cloud_gateway.keys.list_keys(owner="ops")
    assert Scope.ADMIN in ops.scopes
    assert ops.reply_topics == ("results-a", "results-b")

    listed = keys(stack_dir, "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["KEY_ID", "OWNER", "SCOPES", "CREATED", "STATE", "REPLY_TOPICS"]
    table = {row.split()[0]: row.split()[1:] for row in rows}
    assert table[record.key_id][0] == "pipeline"
    assert table[record.key_id][3:] == ["active", "-"]
    assert table[ops.key_id][1] == "admin,user"
    assert table[ops.key_id][3:] == ["active", "results-a,results-b"]
    assert api_key not in listed.stdout
    assert record.key_hash not in listed.stdout

    topics = keys(stack_dir, "reply-topics", record.key_id, "results-b")
    assert topics.returncode == 0, topics.stderr
    assert cloud_gateway.keys.find_by_id(record.key_id).reply_topics == ("results-b",)  # type: ignore[union-attr]
    outside = keys(stack_dir, "reply-topics", record.key_id, "someone-elses")
    assert outside.returncode == 2
    assert "not among this deployment's TTS_REPLY_TOPICS" in outside.stderr

    rotated = keys(stack_dir, "rotate", record.key_id)
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip()
    assert new_key.startswith("tts_")
    assert new_key != api_key
    old, new = cloud_gateway.keys.list_keys(owner="pipeline")
    assert (old.key_id, old.disabled) == (record.key_id, True)
    assert (new.disabled, new.reply_topics, new.scopes) == (False, ("results-b",), old.scopes)
    assert f"{new.key_id}" in rotated.stderr

    revoked = keys(stack_dir, "revoke", new.key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == f"revoked {new.key_id} (pipeline)\n"
    after = {
        row.split()[0]: row.split()[4] for row in keys(stack_dir, "list").stdout.splitlines()[1:]
    }
    assert after == {record.key_id: "revoked", new.key_id: "revoked", ops.key_id: "active"}

    unknown = keys(stack_dir, "revoke", "kid_" + "0" * 24)
    assert unknown.returncode == 2
    assert "no key" in unknown.stderr


def test_an_env_file_whose_stack_has_stopped_is_an_error(tmp_path: Path) -> None:
    write_env_file(tmp_path / ENV_FILE, {"FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{free_port()}"})
    done = keys(tmp_path, "list")
    assert done.returncode == 2
    assert "no longer answer" in done.stderr
