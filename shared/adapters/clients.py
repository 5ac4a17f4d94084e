"""Build Google clients from Settings: real ones in the cloud, emulator-bound ones locally.

The Pub/Sub and Firestore libraries find their emulators through the standard
``PUBSUB_EMULATOR_HOST`` / ``FIRESTORE_EMULATOR_HOST`` variables; storage needs anonymous
credentials and an endpoint, and a throwaway key to sign URLs (the emulator checks none).
"""

from __future__ import annotations

import google.auth
import google.cloud.storage as storage
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import firestore
from google.oauth2 import service_account

from shared.adapters.gcs import GcsBlobStore
from shared.settings import Settings


def firestore_client(settings: Settings, *, database: str | None = None) -> firestore.Client:
    """The ``(default)`` database, or ``database`` (the keys' own: ``settings.keys_database``)."""
    if database is None or database == "(default)":
        return firestore.Client(project=settings.project_id)
    return firestore.Client(project=settings.project_id, database=database)


def storage_endpoint(settings: Settings) -> str | None:
    host = settings.storage_emulator_host
    if host is None:
        return None
    return host if host.startswith("http") else f"http://{host}"


def storage_client(settings: Settings, *, credentials: Credentials | None = None) -> storage.Client:
    endpoint = storage_endpoint(settings)
    if endpoint is None:
        return storage.Client(project=settings.project_id, credentials=credentials)
    return storage.Client(
        project=settings.project_id,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": endpoint},
    )


def voice_routes(settings: Settings) -> dict[str, str]:
    """Voice files' prefixes onto their bucket (the main one unless ``voices.bucket`` is set)."""
    voices = settings.voices
    return {voices.prefix: settings.voices_bucket, voices.quarantine_prefix: settings.voices_bucket}


def blob_store(settings: Settings) -> GcsBlobStore:
    endpoint = storage_endpoint(settings)
    if endpoint is None:
        credentials, _ = google.auth.default()
        return GcsBlobStore(
            storage_client(settings, credentials=credentials),
            bucket=settings.bucket,
            routes=voice_routes(settings),
            token_credentials=credentials,
        )
    return GcsBlobStore(
        storage_client(settings),
        bucket=settings.bucket,
        routes=voice_routes(settings),
        signing_credentials=_throwaway_signer(),
        api_access_endpoint=endpoint,
    )


def _throwaway_signer() -> service_account.Credentials:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "client_email": "emulator@local.invalid",
        "private_key": pem,
        "token_uri": "http://127.0.0.1/unused",
    }
    signer: service_account.Credentials = (
        service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
    )
    return signer
