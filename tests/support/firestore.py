"""Read documents as Firestore stores them, in the JSON form the contracts describe."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.cloud import firestore

from shared.settings import Settings


def as_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def stored_job(settings: Settings, job_id: str) -> dict[str, Any]:
    """The raw ``jobs/{id}`` document, bypassing the store adapter under test."""
    snap = (
        firestore.Client(project=settings.project_id)
        .collection(f"{settings.collection_prefix}jobs")
        .document(job_id)
        .get()
    )
    document: dict[str, Any] = snap.to_dict()
    return document
