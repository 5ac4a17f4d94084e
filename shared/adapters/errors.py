"""Translate google-api-core failures into the gateway's hierarchy, once, at the boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from shared.domain.errors import NotFound, StorageUnavailable, TransientError

_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.TooManyRequests,
    gexc.Aborted,
    gexc.GatewayTimeout,
    gexc.RetryError,
    auth_exc.TransportError,
    auth_exc.RefreshError,
    ConnectionError,
    TimeoutError,
)


@contextmanager
def translated(
    what: str, *, transient: type[TransientError] = StorageUnavailable
) -> Iterator[None]:
    try:
        yield
    except gexc.NotFound as exc:
        raise NotFound(f"{what}: not found") from exc
    except _TRANSIENT as exc:
        raise transient(f"{what}: {type(exc).__name__}") from exc
    except gexc.GoogleAPICallError as exc:
        # Permission and argument errors are configuration faults: loud, never retried forever.
        raise transient(f"{what}: {type(exc).__name__}: {exc.message}") from exc
