"""Authentication: an ``Authorization: Bearer <key>`` header to a principal.

Keys are 256-bit random tokens, so a fast hash is the right tool (there is nothing to brute
force); the lookup is by hash, and the final comparison uses ``hmac.compare_digest``.
"""

from __future__ import annotations

import hmac

from shared.domain.errors import Unauthenticated
from shared.domain.keys import Principal, hash_key, principal_of
from shared.usecases.ports import ApiKeyStore

MAX_KEY_CHARS = 200


def authenticate(authorization: str | None, *, keys: ApiKeyStore) -> Principal:
    """Resolve an ``Authorization: Bearer <key>`` header to a principal."""
    if not authorization:
        raise Unauthenticated("missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("Authorization must be 'Bearer <key>'")
    if len(token) > MAX_KEY_CHARS:
        raise Unauthenticated("invalid API key")
    presented = hash_key(token)
    stored = keys.get(presented)
    if stored is None or not hmac.compare_digest(stored.key_hash, presented) or stored.disabled:
        raise Unauthenticated("invalid API key")
    return principal_of(stored)
