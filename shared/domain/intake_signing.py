"""Signed intake messages, v2: what a pipeline signs, and with what (contracts/intake-signing.md).

Each API key has its own intake signing secret, derived (HKDF-SHA256) from a secret only the
gateway holds (``TTS_INTAKE__SIGNING_KEY``) and the key's public id: a copy of the key store
(hashes and ids) cannot sign, and one key's secret says nothing about another's. The signature
covers everything that decides what a message does: the body, the idempotency key, the
correlation attributes and the time it was signed, so nothing can be changed after signing
and a copy republished later is refused as stale.

The string to sign is built from hex SHA-256 digests rather than from the values themselves,
so no escaping rule has to be agreed between languages:

    tts-intake-v2 LF key_id LF timestamp LF H(idempotency_key) LF attrs LF H(body)

``H`` is lowercase hex SHA-256 of the UTF-8 bytes; ``attrs`` is ``H(name):H(value)`` for each
correlation attribute, sorted as ASCII strings and joined by ``,`` (empty when there is none).
The ``signature`` attribute is ``v2=`` and the lowercase hex HMAC-SHA256 of that string, keyed
by the ASCII bytes of the signing secret exactly as shown (``tsig_...``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SCHEME = "tts-intake-v2"
SIGNATURE_PREFIX = "v2="
SECRET_PREFIX = "tsig_"  # noqa: S105 - the form's prefix, not a secret

KEY_ID = "key_id"
SIGNATURE = "signature"
TIMESTAMP = "timestamp"
IDEMPOTENCY_KEY = "idempotency_key"
SIGNED = frozenset({KEY_ID, SIGNATURE, TIMESTAMP, IDEMPOTENCY_KEY})
"""The attributes v2 reserves; every other one (but Pub/Sub's own) is a correlation attribute."""
LEGACY = frozenset({KEY_ID, SIGNATURE, IDEMPOTENCY_KEY})
"""The attributes the deprecated body-only scheme reserves (``timestamp`` was correlation)."""

TIMESTAMP_PATTERN = re.compile(r"[0-9]{1,11}", re.ASCII)
"""Whole Unix seconds; eleven digits reach past the year 5000, and datetime cannot go far
beyond."""

_HKDF_SALT = b"tts-intake-signing"


def pubsub_owned(name: str) -> bool:
    """Names Pub/Sub reserves (``goog*``) or adds itself (a dead-lettered message's
    ``CloudPubSubDeadLetter*``): never the publisher's, so neither signed nor correlation."""
    return name.startswith(("goog", "CloudPubSub"))


def correlation_attributes(
    attributes: Mapping[str, str], *, reserved: frozenset[str]
) -> dict[str, str]:
    return {k: v for k, v in attributes.items() if k not in reserved and not pubsub_owned(k)}


def derive_secret(server_key: str, *, key_id: str) -> str:
    """The key's intake signing secret: HKDF-SHA256 of the gateway's secret, per key id."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=utf8(key_id))
    raw = hkdf.derive(utf8(server_key))
    return SECRET_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def string_to_sign(
    *,
    key_id: str,
    timestamp: str,
    idempotency_key: str,
    attributes: Mapping[str, str],
    body: bytes,
) -> bytes:
    pairs = sorted(f"{_h(utf8(k))}:{_h(utf8(v))}" for k, v in attributes.items())
    lines = [
        SCHEME,
        key_id,
        timestamp,
        _h(utf8(idempotency_key)),
        ",".join(pairs),
        _h(body),
    ]
    return utf8("\n".join(lines))


def sign(
    secret: str,
    *,
    key_id: str,
    timestamp: str,
    body: bytes,
    idempotency_key: str = "",
    attributes: Mapping[str, str] | None = None,
) -> str:
    message = string_to_sign(
        key_id=key_id,
        timestamp=timestamp,
        idempotency_key=idempotency_key,
        attributes=attributes or {},
        body=body,
    )
    return SIGNATURE_PREFIX + hmac.new(utf8(secret), message, hashlib.sha256).hexdigest()


def signed_attributes(
    secret: str,
    *,
    key_id: str,
    body: bytes,
    now: datetime,
    idempotency_key: str | None = None,
    correlation: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every attribute a v2 message carries: pass them to ``publish`` beside the body."""
    timestamp = str(int(now.timestamp()))
    attributes = dict(correlation or {})
    clashing = sorted(k for k in attributes if k in SIGNED or pubsub_owned(k))
    if clashing:
        raise ValueError(f"correlation attributes may not be named {clashing}")
    signed = {KEY_ID: key_id, TIMESTAMP: timestamp}
    if idempotency_key:
        signed[IDEMPOTENCY_KEY] = idempotency_key
    signed[SIGNATURE] = sign(
        secret,
        key_id=key_id,
        timestamp=timestamp,
        body=body,
        idempotency_key=idempotency_key or "",
        attributes=attributes,
    )
    return {**attributes, **signed}


def matches(expected: str, presented: str) -> bool:
    """Constant-time comparison of a computed signature with whatever text a message carried
    (any characters at all: a non-ASCII one simply does not match)."""
    return hmac.compare_digest(utf8(expected), utf8(presented))


def _h(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate (only a hand-made push could carry one) is hashed, and
    # fails to match, instead of raising.
    return text.encode("utf-8", "surrogatepass")
