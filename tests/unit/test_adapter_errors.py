"""Third-party failures become the gateway's errors once, at the adapter boundary."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc
from google.cloud.firestore_v1 import transaction as firestore_transaction

from shared.adapters.errors import translated
from shared.domain.errors import NotFound, StorageUnavailable, TransientError


def test_a_transaction_that_gave_up_under_contention_is_transient() -> None:
    # The exact message the Firestore client raises once its attempts are spent (a batch's
    # items finishing at once on one document hung a chapter render when this crashed runs).
    gave_up = firestore_transaction._EXCEED_ATTEMPTS_TEMPLATE.format(5)
    with pytest.raises(StorageUnavailable, match="contended") as caught, translated("update"):
        raise ValueError(gave_up)
    assert isinstance(caught.value, TransientError)
    assert isinstance(caught.value.__cause__, ValueError)


def test_any_other_value_error_is_ours_and_propagates_unchanged() -> None:
    with pytest.raises(ValueError, match="a bug of ours"), translated("update job"):
        raise ValueError("a bug of ours")


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (gexc.Aborted("lock"), StorageUnavailable),
        (gexc.Conflict("transaction lock timeout"), StorageUnavailable),
        (gexc.NotFound("gone"), NotFound),
    ],
)
def test_api_errors_map_to_the_gateways(raised: Exception, expected: type[Exception]) -> None:
    with pytest.raises(expected), translated("update job"):
        raise raised
