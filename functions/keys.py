"""``python -m functions.keys create --owner NAME [--admin]``: issue an API key.

Prints the key once on stdout; only its hash is stored.
"""

from __future__ import annotations

import argparse
import sys

from functions.bootstrap import bootstrap
from shared.domain.keys import Scope, new_api_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m functions.keys")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="issue a new API key")
    create.add_argument("--owner", required=True)
    create.add_argument("--admin", action="store_true", help="may see every owner's jobs")
    args = parser.parse_args(argv)

    gw = bootstrap()
    scopes = frozenset({Scope.USER, Scope.ADMIN} if args.admin else {Scope.USER})
    secret, record = new_api_key(owner=args.owner, scopes=scopes, now=gw.clock())
    gw.keys.put(record)
    sys.stdout.write(secret + "\n")
    # Not on stdout, which scripts read for the key alone: the id pipelines name it by.
    sys.stderr.write(f"key id (for signed Pub/Sub intake messages): {record.key_id}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
