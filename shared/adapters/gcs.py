"""Cloud Storage blob store, with V4 signed URLs."""

from __future__ import annotations

import io
from collections.abc import Mapping
from datetime import timedelta

import google.api_core.exceptions
import google.auth.transport.requests
import google.cloud.storage as storage
from google.auth.credentials import Credentials

from shared.adapters.errors import translated
from shared.domain.errors import NotFound, PayloadTooLarge
from shared.usecases.ports import StoredBlob

MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024


class GcsBlobStore:
    """Signs URLs either locally with a key (``signing_credentials``) or, on Cloud Functions
    where the runtime account has no key, through IAM signBlob with ``token_credentials``.

    ``routes`` sends paths under a prefix to another bucket (the voice files' own, see
    ``Settings.voices.bucket``); every other path is in ``bucket``."""

    def __init__(
        self,
        client: storage.Client,
        *,
        bucket: str,
        routes: Mapping[str, str] | None = None,
        signing_credentials: Credentials | None = None,
        token_credentials: Credentials | None = None,
        api_access_endpoint: str | None = None,
    ) -> None:
        if signing_credentials is None and token_credentials is None:
            raise ValueError("GcsBlobStore needs signing or token credentials to sign URLs")
        self._client = client
        self._default = client.bucket(bucket)
        self._routes = {
            prefix: client.bucket(name) for prefix, name in (routes or {}).items() if name != bucket
        }
        self._signing_credentials = signing_credentials
        self._token_credentials = token_credentials
        self._endpoint = api_access_endpoint

    def _bucket(self, path: str) -> storage.Bucket:
        """The bucket ``path`` lives in."""
        return next(
            (b for prefix, b in self._routes.items() if path.startswith(prefix)), self._default
        )

    def put(self, path: str, data: bytes, *, content_type: str) -> StoredBlob:
        blob = self._bucket(path).blob(path)
        with translated(f"upload {path}"):
            blob.upload_from_string(data, content_type=content_type)
        return StoredBlob(
            uri=f"gs://{blob.bucket.name}/{path}", size=len(data), generation=blob.generation
        )

    def get(self, path: str, *, max_bytes: int | None = None) -> bytes:
        # One request, the media download itself: no metadata read first to learn the size.
        # The limit is held while the body arrives instead (the download stops at the first
        # chunk past it), which also leaves no gap for an overwrite between sizing and reading.
        limit = min(max_bytes or MAX_DOWNLOAD_BYTES, MAX_DOWNLOAD_BYTES)
        sink = _Bounded(path, limit=limit)
        with translated(f"download {path}"):
            try:
                self._bucket(path).blob(path).download_to_file(sink)
            except google.api_core.exceptions.NotFound:
                raise NotFound(f"no object {path!r}") from None
        return sink.getvalue()

    def copy(self, source: str, destination: str) -> StoredBlob:
        with translated(f"copy {source} to {destination}"):
            source_bucket, target = self._bucket(source), self._bucket(destination)
            blob = source_bucket.get_blob(source)
            if blob is None:
                raise NotFound(f"no object {source!r}")
            copied = source_bucket.copy_blob(blob, target, destination)
        return StoredBlob(
            uri=f"gs://{target.name}/{destination}",
            size=copied.size or 0,
            generation=copied.generation,
        )

    def delete(self, path: str, *, if_generation: int | None = None) -> bool:
        with translated(f"delete {path}"):
            try:
                self._bucket(path).delete_blob(path, if_generation_match=if_generation)
            except (
                google.api_core.exceptions.NotFound,
                google.api_core.exceptions.PreconditionFailed,
            ):
                return False
        return True

    def signed_url(self, path: str, *, ttl_s: int, method: str = "GET") -> str:
        blob = self._bucket(path).blob(path)
        options: dict[str, object] = {
            "version": "v4",
            "expiration": timedelta(seconds=ttl_s),
            "method": method,
        }
        if self._endpoint:
            options["api_access_endpoint"] = self._endpoint
        with translated(f"sign {path}"):
            if self._signing_credentials is not None:
                options["credentials"] = self._signing_credentials
            elif self._token_credentials is not None:
                credentials = self._token_credentials
                if not credentials.valid:
                    credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
                options["service_account_email"] = credentials.service_account_email  # type: ignore[attr-defined]
                options["access_token"] = credentials.token
            url: str = blob.generate_signed_url(**options)
        return url


class _Bounded:
    """A download's sink that refuses to hold more than ``limit`` bytes (the client writes
    each chunk it receives; a file object's ``write`` is all it uses)."""

    def __init__(self, path: str, *, limit: int) -> None:
        self._buffer = io.BytesIO()
        self._path = path
        self._limit = limit

    def write(self, data: bytes, /) -> int:
        if self._buffer.tell() + len(data) > self._limit:
            raise PayloadTooLarge(f"{self._path} is over {self._limit} bytes, the limit")
        return self._buffer.write(data)

    def getvalue(self) -> bytes:
        return self._buffer.getvalue()
