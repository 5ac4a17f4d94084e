"""API keys and principals: a key is generated once and stored only as a SHA-256 hash.
Checking a presented key is the ``usecases.auth`` module's work.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, model_validator

from shared.domain.errors import Forbidden

KEY_PREFIX = "tts_"


class Scope(StrEnum):
    USER = "user"
    ADMIN = "admin"


class ApiKey(BaseModel):
    """``api_keys/{key_hash}``. The key itself is never stored."""

    model_config = ConfigDict(frozen=True)

    key_hash: str
    key_id: str = ""
    """Names the key in a Pub/Sub message without revealing anything that signs one."""
    owner: str
    scopes: frozenset[Scope] = frozenset({Scope.USER})
    created_at: datetime
    disabled: bool = False
    reply_topics: tuple[str, ...] = ()
    """Topics this key's jobs may name as ``reply_topic`` (an admin records them, within the
    deployment's ``TTS_REPLY_TOPICS``): one owner's key never replies into another's pipeline."""

    @model_validator(mode="after")
    def _derive_key_id(self) -> Self:
        if not self.key_id:
            object.__setattr__(self, "key_id", key_id_for(self.key_hash))
        return self


class Principal(BaseModel):
    """Who is calling, once authenticated."""

    model_config = ConfigDict(frozen=True)

    owner: str
    scopes: frozenset[Scope]
    key_id: str | None = None
    """The key that proved it (None: the gateway acting for an owner, e.g. a batch's join)."""
    reply_topics: frozenset[str] = frozenset()
    """The reply topics that key may name."""

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


KEY_ID_PATTERN = re.compile(r"kid_[0-9a-f]{24}", re.ASCII)


def principal_of(key: ApiKey) -> Principal:
    return Principal(
        owner=key.owner,
        scopes=key.scopes,
        key_id=key.key_id,
        reply_topics=frozenset(key.reply_topics),
    )


def key_id_for(key_hash: str) -> str:
    """A public name for a key: one-way from its hash, so it gives away no signing secret."""
    return "kid_" + hashlib.sha256(f"key-id:{key_hash}".encode()).hexdigest()[:24]


def sign_message(key: str, data: bytes) -> str:
    """Deprecated (v1, accepted for one release while ``TTS_INTAKE__ACCEPT_LEGACY`` is on): HMAC
    of the body alone, keyed by the key's SHA-256, which the key store holds too. Sign v2
    (``shared.domain.intake_signing``) instead."""
    return hmac.new(hash_key(key).encode(), data, hashlib.sha256).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key(
    *,
    owner: str,
    scopes: frozenset[Scope],
    now: datetime,
    reply_topics: tuple[str, ...] = (),
) -> tuple[str, ApiKey]:
    """A fresh secret and the record to store for it. Show the secret once; keep the record."""
    secret = generate_key()
    record = ApiKey(
        key_hash=hash_key(secret),
        owner=owner,
        scopes=scopes,
        created_at=now,
        reply_topics=reply_topics,
    )
    return secret, record
