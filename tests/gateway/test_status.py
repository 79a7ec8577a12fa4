"""The mapping of Cirrus errors to C-STORE statuses and the Error Comment value."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from cirrus.errors import (
    CirrusError,
    InstanceTooLargeError,
    InvalidInstanceError,
    NotFoundError,
    StoreUnavailableError,
)
from cirrus.gateway.status import (
    CANNOT_UNDERSTAND,
    DATA_SET_DOES_NOT_MATCH,
    ERROR_COMMENT_MAX_LENGTH,
    INTERNAL_ERROR,
    INTERNAL_ERROR_COMMENT,
    OUT_OF_RESOURCES,
    STORE_UNAVAILABLE_COMMENT,
    StoreFailure,
    error_comment,
    failure_for_error,
    failure_status,
)


@pytest.mark.parametrize(
    ("error", "status", "comment"),
    [
        (InvalidInstanceError("bytes are garbage", undecodable=True), CANNOT_UNDERSTAND, None),
        (InvalidInstanceError("no StudyInstanceUID"), DATA_SET_DOES_NOT_MATCH, None),
        (StoreUnavailableError("S3 failed"), OUT_OF_RESOURCES, STORE_UNAVAILABLE_COMMENT),
        (InstanceTooLargeError("inflates too far", undecodable=True), OUT_OF_RESOURCES, None),
        (NotFoundError("object missing"), INTERNAL_ERROR, INTERNAL_ERROR_COMMENT),
    ],
)
def test_failure_for_error(error: CirrusError, status: int, comment: str | None) -> None:
    failure = failure_for_error(error)

    assert failure.status == status
    assert failure.reason == str(error)
    assert failure.comment == (comment or str(error))


def test_statuses_in_annex_b_ranges() -> None:
    # PS3.4 Annex B.2.3: A7xx Refused: Out of Resources, A9xx and Cxxx errors of the data set.
    assert OUT_OF_RESOURCES >> 8 == 0xA7
    assert INTERNAL_ERROR >> 8 == 0xA7
    assert DATA_SET_DOES_NOT_MATCH >> 8 == 0xA9
    assert CANNOT_UNDERSTAND >> 12 == 0xC


def test_error_comment_short_text_unchanged() -> None:
    assert error_comment("instance has no SOPInstanceUID") == "instance has no SOPInstanceUID"


def test_error_comment_keeps_first_clause() -> None:
    text = "instance has no SOPInstanceUID (0008,0018); the sender must set it before sending"

    assert error_comment(text) == "instance has no SOPInstanceUID (0008,0018)"


def test_error_comment_shortens_long_clause() -> None:
    comment = error_comment("x" * 100)

    assert len(comment) == ERROR_COMMENT_MAX_LENGTH
    assert comment.endswith("...")


def test_error_comment_replaces_invalid_characters() -> None:
    assert error_comment("VR b'\\x00' \u00e9\nend") == "VR b'?x00' ??end"


def test_failure_status_data_set() -> None:
    failure = StoreFailure(DATA_SET_DOES_NOT_MATCH, "reason", "comment", (0x00080018,))

    ds = failure_status(failure)

    assert isinstance(ds, Dataset)
    assert ds.Status == DATA_SET_DOES_NOT_MATCH
    assert ds.ErrorComment == "comment"
    assert ds.OffendingElement == 0x00080018
