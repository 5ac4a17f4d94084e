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


_TRANSACTION_GAVE_UP = "Failed to commit transaction"


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
    except ValueError as exc:
        # A Firestore transaction that kept meeting others on its documents gives up with a
        # plain ValueError ("Failed to commit transaction in N attempts"), not an API error;
        # nothing was written, so it is the same "try again" as ABORTED. Any other ValueError
        # is a fault of ours and propagates as it is.
        if not str(exc).startswith(_TRANSACTION_GAVE_UP):
            raise
        raise transient(f"{what}: contended: {exc}") from exc
    except gexc.GoogleAPICallError as exc:
        # Permission and argument errors are configuration faults: loud, never retried forever.
        raise transient(f"{what}: {type(exc).__name__}: {exc.message}") from exc
