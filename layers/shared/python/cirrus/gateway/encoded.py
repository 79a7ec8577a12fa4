"""A check that an encoded DIMSE data set is whole, before pydicom decodes it.

pydicom 3 decodes a value that is shorter than its stated length without an error, so a
truncated Identifier or Action Information would be matched as far as it goes. The element
scanner (``cirrus.dicom.scan``) walks the encoded elements by their lengths and finds where one
runs past the end of the message.
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Any

from cirrus.dicom.scan import Encoding, MalformedError, TruncatedError, scan_elements

logger = logging.getLogger(__name__)


class IncompleteDataSetError(Exception):
    """An encoded data set ends inside an element or has a structure no encoder produces."""


def check_complete(encoded: BytesIO | None, transfer_syntax: Any) -> None:
    """Raise ``IncompleteDataSetError`` unless ``encoded`` contains whole elements only.

    ``transfer_syntax`` is the pydicom ``UID`` of the presentation context. A deflated data
    set is left to pydicom, which inflates it and fails on a truncated stream.
    """
    if encoded is None or transfer_syntax.is_deflated:
        return
    encoding = Encoding(
        implicit_vr=transfer_syntax.is_implicit_VR,
        little_endian=transfer_syntax.is_little_endian,
    )
    try:
        scan_elements(encoded.getvalue(), 0, encoding)
    except TruncatedError as exc:
        # The Error Comment that carries the message has at most 64 characters, so the
        # scanner's details (offsets and lengths, no values) go to the log.
        logger.warning("DIMSE data set truncated", extra={"reason": str(exc)})
        raise IncompleteDataSetError("data set is truncated") from exc
    except MalformedError as exc:
        logger.warning("DIMSE data set malformed", extra={"reason": str(exc)})
        raise IncompleteDataSetError("data set is malformed") from exc
