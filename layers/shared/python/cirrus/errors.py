"""The one error hierarchy of Cirrus.

Domain code raises these; the boundaries translate them once: ``cirrus.dicomweb.errors`` to an
HTTP status, ``cirrus.gateway.status`` to a DICOM status. Messages name the element or value that
failed, and go back to the client that sent the request. A message about a request may quote a
value of that request, such as a patient name in a query, so the DICOMweb service logs only the
class of an error, and the ``parameter`` and ``kind`` of an ``InvalidParameterError``.
"""

from __future__ import annotations


class CirrusError(Exception):
    """Base of every error Cirrus raises on purpose."""


class InvalidInstanceError(CirrusError):
    """The bytes are not a DICOM instance that can be archived.

    ``undecodable`` separates bytes that cannot be parsed at all (PS3.4 C-STORE 0xC000,
    cannot understand) from a parsed data set that lacks what the archive needs (0xA900,
    data set does not match SOP class).
    """

    def __init__(self, message: str, *, undecodable: bool = False) -> None:
        super().__init__(message)
        self.undecodable = undecodable


class InstanceTooLargeError(InvalidInstanceError):
    """The instance would need more memory than the archive grants one object.

    It maps to Out of Resources (0xA700) in C-STORE and STOW-RS.
    """


class InvalidRequestError(CirrusError):
    """A request parameter or header is malformed."""


class InvalidParameterError(InvalidRequestError):
    """A query parameter, header or attribute of a request is invalid.

    ``parameter`` names it and ``kind`` describes the error, both without the value sent, so
    that they can be logged where the message cannot.
    """

    def __init__(self, message: str, *, parameter: str, kind: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.kind = kind


class UnsupportedMediaTypeError(CirrusError):
    """A request body has a media type the service does not accept."""


class NotAcceptableError(CirrusError):
    """No representation the client accepts can be produced."""


class DamagedInstanceError(CirrusError):
    """A stored instance cannot be parsed or decoded, so the request cannot be served.

    The request is valid and the stored data is at fault, so DICOMweb sends 500, not 406.
    """


class NotFoundError(CirrusError):
    """The study, series, instance or bulk data element does not exist for this caller."""


class RangeNotSatisfiableError(CirrusError):
    """A Range header selects no bytes of the resource."""


class PayloadTooLargeError(CirrusError):
    """A request body is larger than the service accepts."""


class ConflictError(CirrusError):
    """The request conflicts with what the archive already holds."""


class LegalHoldError(ConflictError):
    """A delete, or a store that changes an instance, names a study under legal hold."""


class StoreUnavailableError(CirrusError):
    """S3, DynamoDB or KMS failed or timed out; the caller may retry later."""
