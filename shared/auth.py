"""API keys: generated once, stored only as a SHA-256 hash, checked in constant time.

Keys are 256-bit random tokens, so a fast hash is the right tool (there is nothing to brute
force); the lookup is by hash, and the final comparison uses ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from shared.errors import Forbidden, Unauthenticated

if TYPE_CHECKING:
    from shared.ports import ApiKeyStore

KEY_PREFIX = "tts_"
MAX_KEY_CHARS = 200


class Scope(StrEnum):
    USER = "user"
    ADMIN = "admin"


class ApiKey(BaseModel):
    """``api_keys/{key_hash}``. The key itself is never stored."""

    model_config = ConfigDict(frozen=True)

    key_hash: str
    owner: str
    scopes: frozenset[Scope] = frozenset({Scope.USER})
    created_at: datetime
    disabled: bool = False


class Principal(BaseModel):
    """Who is calling, once authenticated."""

    model_config = ConfigDict(frozen=True)

    owner: str
    scopes: frozenset[Scope]

    @property
    def admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    def may_see(self, owner: str) -> bool:
        return self.admin or owner == self.owner

    def may_see_voice(self, owner: str | None) -> bool:
        """Voices without an owner form the shared library everyone may use."""
        return owner is None or self.may_see(owner)

    def may_change_voice(self, owner: str | None) -> bool:
        return self.admin or (owner is not None and owner == self.owner)

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this key lacks the {scope} scope")


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key(*, owner: str, scopes: frozenset[Scope], now: datetime) -> tuple[str, ApiKey]:
    """A fresh secret and the record to store for it. Show the secret once; keep the record."""
    secret = generate_key()
    return secret, ApiKey(key_hash=hash_key(secret), owner=owner, scopes=scopes, created_at=now)


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
    return Principal(owner=stored.owner, scopes=stored.scopes)
