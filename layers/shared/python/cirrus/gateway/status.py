"""C-STORE response statuses of the gateway (PS3.4 Annex B.2.3), mapped once from Cirrus errors.

The Storage Service Class defines three failure ranges: Refused: Out of Resources (A7xx),
Error: Data Set does not match SOP Class (A9xx) and Error: Cannot understand (Cxxx). The low
byte of each is left to the implementation. A7xx means that the SCP cannot store the instance
now, while A9xx and Cxxx mean that the data set is at fault. A sender may retry the first, but
has no reason to resend the others, so an error that is not the sender's fault maps to A7xx.
The one exception is an unexpected error of the instance parser: the same bytes fail again on
every retry, so the gateway sends Cannot understand for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pydicom.dataset import Dataset

from cirrus.errors import (
    CirrusError,
    ConflictError,
    InstanceTooLargeError,
    InvalidInstanceError,
    LegalHoldError,
    StoreUnavailableError,
)

SUCCESS: Final = 0x0000
# Refused: Out of Resources. S3 failed or timed out (the same request can succeed later), or
# a deflated data set inflates past the limit set in cirrus.dicom.instance.
OUT_OF_RESOURCES: Final = 0xA700
# Also Refused: Out of Resources, for an error that Cirrus did not expect. The data set may
# well be valid, and Cannot understand (Cxxx) would wrongly blame it and tell the modality
# not to resend it. A distinct low byte separates the two A7xx causes in the modality's log.
INTERNAL_ERROR: Final = 0xA701
# Error: Data Set does not match SOP Class. The data set parsed, but lacks what the archive
# needs or contradicts the C-STORE request.
DATA_SET_DOES_NOT_MATCH: Final = 0xA900
# Error: Cannot understand. The bytes are not a DICOM data set that can be parsed.
CANNOT_UNDERSTAND: Final = 0xC000

# Refused: Not Authorized (PS3.7 Annex C.5.x general status): the calling AE title may not use
# the service it asked for, or the instance would change a study under legal hold.
NOT_AUTHORIZED: Final = 0x0124

# Error Comment (0000,0902) has VR LO, so at most 64 characters and no backslash, and PS3.7
# Annex C.5 allows only the Default Character Repertoire (printable ASCII) in it.
ERROR_COMMENT_MAX_LENGTH: Final = 64

STORE_UNAVAILABLE_COMMENT: Final = "archive storage is unavailable; retry later"
INTERNAL_ERROR_COMMENT: Final = "internal error in the archive; retry later"
# The full reason, with the UIDs, is longer than 64 characters, so only the gateway log has it.
LEGAL_HOLD_COMMENT: Final = "study under legal hold: stored instance cannot be replaced"


@dataclass(frozen=True)
class StoreFailure:
    """A failed C-STORE: its status, the reason for the log and the Error Comment for the peer.

    ``offending_elements`` are the tags for Offending Element (0000,0901), which PS3.7 Annex C.5
    allows with A9xx and Cxxx statuses.
    """

    status: int
    reason: str
    comment: str
    offending_elements: tuple[int, ...] = ()


def failure_for_error(exc: CirrusError) -> StoreFailure:
    """Map an error of the write path to its C-STORE failure; this is the only such table."""
    if isinstance(exc, InstanceTooLargeError):
        return StoreFailure(OUT_OF_RESOURCES, str(exc), str(exc))
    if isinstance(exc, InvalidInstanceError):
        status = CANNOT_UNDERSTAND if exc.undecodable else DATA_SET_DOES_NOT_MATCH
        return StoreFailure(status, str(exc), str(exc))
    if isinstance(exc, LegalHoldError):
        # Not a fault of the data set, and a resend fails the same way until the hold is
        # released, so neither Cxxx nor a retried A7xx fits.
        return StoreFailure(NOT_AUTHORIZED, str(exc), LEGAL_HOLD_COMMENT)
    if isinstance(exc, ConflictError):
        # The data set contradicts what the archive stores under its SOP Instance UID.
        return StoreFailure(DATA_SET_DOES_NOT_MATCH, str(exc), str(exc))
    if isinstance(exc, StoreUnavailableError):
        return StoreFailure(OUT_OF_RESOURCES, str(exc), STORE_UNAVAILABLE_COMMENT)
    return internal_failure(str(exc))


def internal_failure(reason: str) -> StoreFailure:
    """Return the failure for an unexpected error: A7xx, so that the modality retries."""
    return StoreFailure(INTERNAL_ERROR, reason, INTERNAL_ERROR_COMMENT)


def error_comment(text: str) -> str:
    """Return ``text`` as a valid Error Comment value of at most 64 characters.

    Characters that LO does not allow become "?". A longer text is cut to its first clause,
    which ends at "; ", when that fits, and is otherwise shortened with "...".
    """
    cleaned = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text).strip()
    if len(cleaned) <= ERROR_COMMENT_MAX_LENGTH:
        return cleaned
    first_clause = cleaned.split("; ", 1)[0]
    if len(first_clause) <= ERROR_COMMENT_MAX_LENGTH:
        return first_clause
    return cleaned[: ERROR_COMMENT_MAX_LENGTH - 3].rstrip() + "..."


def failure_status(failure: StoreFailure) -> Dataset:
    """Build the status data set that pynetdicom copies into the C-STORE response."""
    ds = Dataset()
    ds.Status = failure.status
    ds.ErrorComment = error_comment(failure.comment)
    if failure.offending_elements:
        ds.OffendingElement = list(failure.offending_elements)
    return ds
