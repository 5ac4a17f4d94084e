"""A tiny typed client for the gateway's REST API.

Everything that can go wrong on the wire (no connection, a timeout, an error status, a body of
the wrong shape) becomes one exception type, :class:`ApiError`, whose text is one line a person
can act on; the command line prints it and exits non-zero.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import requests

from cli.errors import QttsError

JsonObject = dict[str, Any]
TERMINAL_STATES = frozenset({"succeeded", "failed", "canceled"})
CHUNK_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 10.0
USER_AGENT = "qtts/0.1"


class ApiError(QttsError):
    """The gateway could not be reached, refused the request, or answered something unexpected."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        job_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.job_id = job_id
        """The job the error names (``X-Job-Id``): a wait that ran out names the one that runs
        on."""


@dataclass(frozen=True, slots=True)
class JobError:
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    state: str
    mode: str
    voice_id: str | None
    audio_url: str | None
    error: JobError | None
    raw: JsonObject

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def parse(cls, body: object) -> Job:
        obj = _object(body, "job")
        audio = obj.get("audio")
        return cls(
            id=_text(obj, "id"),
            state=_text(obj, "state"),
            mode=_text(obj, "mode"),
            voice_id=_optional_text(obj, "voice_id"),
            audio_url=_optional_text(audio, "url") if isinstance(audio, dict) else None,
            error=_job_error(obj.get("error")),
            raw=obj,
        )


@dataclass(frozen=True, slots=True)
class VerifySummary:
    """An item's checks in numbers, as the manifest gives them."""

    chunks: int
    remade: int
    below_threshold: tuple[int, ...]
    """The indexes of its chunks whose kept audio still fails a check."""

    @classmethod
    def parse(cls, value: object) -> VerifySummary | None:
        # Lenient: a gateway that checks nothing (or predates checks) sends none, and a
        # summary of the wrong shape is only a line not printed, never a failed render.
        if not isinstance(value, dict):
            return None
        chunks, remade, below = (
            value.get("chunks"),
            value.get("remade"),
            value.get("below_threshold"),
        )
        if (
            not isinstance(chunks, int)
            or not isinstance(remade, int)
            or not isinstance(below, list)
        ):
            return None
        return cls(
            chunks=chunks,
            remade=remade,
            below_threshold=tuple(i for i in below if isinstance(i, int)),
        )


@dataclass(frozen=True, slots=True)
class ManifestItem:
    key: str | None
    job_id: str
    state: str
    audio_url: str | None
    error: JobError | None
    verification: VerifySummary | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    job_id: str
    state: str
    items: tuple[ManifestItem, ...]
    joined: ManifestItem | None = None
    """The joined file's job, for a batch submitted with ``join``, once it exists."""

    @classmethod
    def parse(cls, body: object) -> Manifest:
        obj = _object(body, "manifest")
        items = obj.get("items")
        if not isinstance(items, list):
            raise ApiError("the gateway answered a manifest without an 'items' list")
        joined = obj.get("joined")
        return cls(
            job_id=_text(obj, "job_id"),
            state=_text(obj, "state"),
            items=tuple(_manifest_item(_object(e, "manifest item")) for e in items),
            joined=None if joined is None else _manifest_item(_object(joined, "joined item")),
        )


def _manifest_item(entry: JsonObject) -> ManifestItem:
    return ManifestItem(
        key=_optional_text(entry, "key"),
        job_id=_text(entry, "job_id"),
        state=_text(entry, "state"),
        audio_url=_optional_text(entry, "audio_url"),
        error=_job_error(entry.get("error")),
        verification=VerifySummary.parse(entry.get("verification")),
    )


class Client:
    """One gateway, one key. Paths are API paths (``/v1/...``), joined onto ``base_url``."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout_s: float,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or None
        self.timeout_s = timeout_s
        self._session = session or requests.Session()

    # -- the one place a request is made --------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        stream: bool = False,
        allow_redirects: bool = True,
    ) -> requests.Response:
        """The response when its status is below 400, else :class:`ApiError` with the
        gateway's own message."""
        url = f"{self.base_url}{path}"
        all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        if self.api_key:
            all_headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            response = self._session.request(
                method,
                url,
                json=json_body,
                params=params,
                headers=all_headers,
                data=data,
                files=files,
                stream=stream,
                allow_redirects=allow_redirects,
                timeout=(CONNECT_TIMEOUT_S, self.timeout_s),
            )
        except requests.ConnectionError:
            raise ApiError(f"cannot reach the gateway at {self.base_url}") from None
        except requests.Timeout:
            raise ApiError(f"{method} {path}: no answer within {self.timeout_s:g} s") from None
        except requests.RequestException as exc:
            raise ApiError(f"{method} {path}: {exc}") from None
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def get_json(self, path: str, *, params: Mapping[str, str | int] | None = None) -> JsonObject:
        return json_object(self.send("GET", path, params=params))

    def post_json(
        self, path: str, body: object, *, headers: Mapping[str, str] | None = None
    ) -> JsonObject:
        return json_object(self.send("POST", path, json_body=body, headers=headers))

    # -- jobs ----------------------------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        return Job.parse(self.get_json(f"/v1/jobs/{quote(job_id, safe='')}"))

    def manifest(self, job_id: str) -> Manifest:
        return Manifest.parse(self.get_json(f"/v1/jobs/{quote(job_id, safe='')}/manifest"))

    def download_captions(self, job_id: str, *, fmt: str, dest: Path) -> int:
        """Save the job's captions (``srt`` or ``vtt``) at ``dest`` (see
        :func:`save_atomically`)."""
        path = f"/v1/jobs/{quote(job_id, safe='')}/captions"
        response = self.send("GET", path, params={"format": fmt})
        return save_atomically([response.content], dest)

    def wait_for_job(
        self, job_id: str, *, poll_s: float, on_update: Callable[[Job], None] | None = None
    ) -> Job:
        """Poll until the job has finished (in any way), easing off to five times ``poll_s``:
        a long synthesis then costs a few reads a minute, a short one is seen at once."""
        delay = poll_s
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job.finished:
                return job
            time.sleep(delay)
            delay = min(delay * 1.5, poll_s * 5)

    def fetch_audio(self, path: str) -> requests.Response:
        """The audio behind an API path that redirects to a signed URL, as a streaming
        response (close it, or use it in a ``with``)."""
        first = self.send("GET", path, stream=True, allow_redirects=False)
        if not first.is_redirect:
            return first
        location = urljoin(first.url, first.headers["Location"])
        first.close()
        # A signed URL carries its own authorisation: our bearer key must not travel to the
        # bucket, and GCS refuses a signed request that carries a second credential. So this
        # hop is a plain request, never through send().
        try:
            response = self._session.get(
                location,
                headers={"User-Agent": USER_AGENT},
                stream=True,
                timeout=(CONNECT_TIMEOUT_S, self.timeout_s),
            )
        except requests.RequestException as exc:
            raise ApiError(f"downloading {path}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            response.close()
            raise ApiError(
                f"downloading {path}: the signed URL answered HTTP {response.status_code}",
                status=response.status_code,
            )
        return response

    def download(self, path: str, dest: Path) -> int:
        """Save the audio behind ``path`` at ``dest`` (see :func:`save_atomically`)."""
        with self.fetch_audio(path) as response:
            return save_atomically(response.iter_content(CHUNK_BYTES), dest)

    def _error(self, response: requests.Response) -> ApiError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        code = None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
            code = error.get("code") if isinstance(error.get("code"), str) else None
            problems = error.get("problems")
            if isinstance(problems, list) and len(problems) > 1:
                message += f" (and {len(problems) - 1} more problems)"
        else:
            text = " ".join(response.text.split())[:200]
            message = text or response.reason or "no message"
        if status == 401 and not self.api_key:
            message += "; set QTTS_API_KEY or pass --api-key"
        return ApiError(
            f"{one_line(message)} (HTTP {status})",
            status=status,
            code=code,
            job_id=response.headers.get("X-Job-Id") or None,
        )


def save_atomically(chunks: Iterable[bytes], dest: Path) -> int:
    """Write to a hidden ``.part`` file beside ``dest`` and rename it at the end, so a download
    that is interrupted never leaves a file that looks finished (a re-run trusts existing ones).
    """
    part = dest.with_name(f".{dest.name}.part")
    size = 0
    try:
        with part.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return size


def one_line(text: str) -> str:
    return " ".join(text.split())


def json_object(response: requests.Response) -> JsonObject:
    """The response's JSON object, or :class:`ApiError` (a proxy's HTML page, say)."""
    try:
        body = response.json()
    except ValueError:
        raise ApiError(
            f"the gateway answered HTTP {response.status_code} without a JSON body"
        ) from None
    return _object(body, f"answer to {response.request.method} {response.request.path_url}")


def _object(value: object, what: str) -> JsonObject:
    if not isinstance(value, dict):
        raise ApiError(f"the gateway answered an unexpected {what}: not a JSON object")
    return value


def _text(obj: JsonObject, name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise ApiError(f"the gateway answered an object without a string '{name}'")
    return value


def _optional_text(obj: JsonObject, name: str) -> str | None:
    value = obj.get(name)
    return value if isinstance(value, str) else None


def _job_error(value: object) -> JobError | None:
    if not isinstance(value, dict):
        return None
    return JobError(code=str(value.get("code") or "error"), message=str(value.get("message") or ""))
