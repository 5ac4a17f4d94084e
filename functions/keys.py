"""``python -m functions.keys``: issue, list, revoke and rotate API keys, and set the reply
topics a key may name.

    create --owner NAME [--admin] [--reply-topic TOPIC ...]
    list [--owner NAME]
    revoke KEY_ID
    rotate KEY_ID [--keep-old]
    reply-topics KEY_ID [TOPIC ...]       (none: the key may name no reply topic)

``create`` and ``rotate`` print the new API key alone on stdout (scripts read it there; it is
shown this once, and only its hash is stored), and on stderr its key id, the name signed intake
messages carry, and its intake signing secret when this process has the deployment's
``TTS_INTAKE__SIGNING_KEY`` (else ``GET /v1/intake/secret`` with the key shows it). Keys are
named by their key id everywhere else. Reply topics must be among the deployment's
``TTS_REPLY_TOPICS``, the topics it is granted to publish to.

Against ``make run`` it needs no variables: it reads the stack's ``.devstack/env``
(``functions.tool_env``). Without that file it uses the environment and credentials, i.e. a
real project (``TTS_PROJECT_ID=...``). A change reaches running functions within
``TTS_API__KEY_CACHE_TTL_S`` (30 s).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from functions import tool_env
from functions.bootstrap import bootstrap
from shared.domain.errors import ConfigurationError, GatewayError
from shared.domain.keys import ApiKey, Scope, new_api_key, principal_of
from shared.usecases import intake
from shared.usecases.gateway import Gateway


class UsageError(Exception):
    """The command cannot be done as asked (exit status 2)."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        tool_env.load(env_file=args.env_file, ignore=args.no_env_file)
        gw = bootstrap()
        return int(args.run(gw, args))
    except (UsageError, tool_env.EnvFileError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except GatewayError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m functions.keys")
    parser.add_argument(
        "--env-file", type=Path, default=None, help="settings file (default: .devstack/env)"
    )
    parser.add_argument(
        "--no-env-file",
        action="store_true",
        help="ignore .devstack/env: this environment as it is (the real project)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    create = sub.add_parser("create", help="issue a new API key")
    create.add_argument("--owner", required=True)
    create.add_argument("--admin", action="store_true", help="may see every owner's jobs")
    create.add_argument(
        "--reply-topic",
        dest="reply_topics",
        action="append",
        default=[],
        metavar="TOPIC",
        help="a topic this key's jobs may name as reply_topic (repeat for more)",
    )
    create.set_defaults(run=_create)

    listing = sub.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--owner")
    listing.set_defaults(run=_list)

    revoke = sub.add_parser("revoke", help="disable a key")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=_revoke)

    rotate = sub.add_parser("rotate", help="a new key like this one; the old one is revoked")
    rotate.add_argument("key_id")
    rotate.add_argument(
        "--keep-old", action="store_true", help="leave the old key working (revoke it later)"
    )
    rotate.set_defaults(run=_rotate)

    topics = sub.add_parser("reply-topics", help="set the reply topics a key may name")
    topics.add_argument("key_id")
    topics.add_argument("topics", nargs="*", metavar="TOPIC")
    topics.set_defaults(run=_reply_topics)
    return parser


def _create(gw: Gateway, args: argparse.Namespace) -> int:
    scopes = frozenset({Scope.USER, Scope.ADMIN} if args.admin else {Scope.USER})
    secret, record = new_api_key(
        owner=args.owner,
        scopes=scopes,
        now=gw.clock(),
        reply_topics=_allowed(gw, args.reply_topics),
    )
    gw.keys.put(record)
    _issued(gw, secret, record)
    return 0


def _list(gw: Gateway, args: argparse.Namespace) -> int:
    rows = [("KEY_ID", "OWNER", "SCOPES", "CREATED", "STATE", "REPLY_TOPICS")]
    for key in gw.keys.list_keys(owner=args.owner):
        rows.append(
            (
                key.key_id,
                key.owner,
                ",".join(sorted(key.scopes)),
                key.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "revoked" if key.disabled else "active",
                ",".join(key.reply_topics) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")
    return 0


def _revoke(gw: Gateway, args: argparse.Namespace) -> int:
    key = _find(gw, args.key_id)
    if not key.disabled:
        gw.keys.put(key.model_copy(update={"disabled": True}))
    sys.stdout.write(f"revoked {key.key_id} ({key.owner})\n")
    return 0


def _rotate(gw: Gateway, args: argparse.Namespace) -> int:
    old = _find(gw, args.key_id)
    if old.disabled:
        raise UsageError(f"{old.key_id} is revoked: create a new key instead")
    secret, record = new_api_key(
        owner=old.owner, scopes=old.scopes, now=gw.clock(), reply_topics=old.reply_topics
    )
    gw.keys.put(record)  # the new key first: a failure between the two leaves both working
    if not args.keep_old:
        gw.keys.put(old.model_copy(update={"disabled": True}))
    _issued(gw, secret, record)
    state = "still works" if args.keep_old else "is revoked"
    sys.stderr.write(f"the old key {old.key_id} {state}\n")
    return 0


def _reply_topics(gw: Gateway, args: argparse.Namespace) -> int:
    key = _find(gw, args.key_id)
    updated = key.model_copy(update={"reply_topics": _allowed(gw, args.topics)})
    gw.keys.put(updated)
    sys.stdout.write(f"{key.key_id}: {', '.join(updated.reply_topics) or '(none)'}\n")
    return 0


def _find(gw: Gateway, key_id: str) -> ApiKey:
    key = gw.keys.find_by_id(key_id)
    if key is None:
        raise UsageError(f"no key {key_id!r} (python -m functions.keys list shows them)")
    return key


def _allowed(gw: Gateway, topics: Sequence[str]) -> tuple[str, ...]:
    """The deployment's list bounds each key's: it is what the gateway may publish to."""
    bound = set(gw.settings.reply_topics)
    outside = sorted(set(topics) - bound)
    if outside:
        raise UsageError(
            f"reply topics {outside} are not among this deployment's TTS_REPLY_TOPICS "
            f"{sorted(bound)}"
        )
    return tuple(dict.fromkeys(topics))


def _issued(gw: Gateway, secret: str, record: ApiKey) -> None:
    sys.stdout.write(secret + "\n")
    # Not on stdout, which scripts read for the API key alone.
    sys.stderr.write(f"key id (signed Pub/Sub intake messages name it): {record.key_id}\n")
    try:
        signing = intake.signing_secret(gw, principal_of(record))
    except ConfigurationError:
        sys.stderr.write("intake signing secret: GET /v1/intake/secret with this key\n")
    else:
        sys.stderr.write(f"intake signing secret: {signing}\n")


if __name__ == "__main__":
    sys.exit(main())
