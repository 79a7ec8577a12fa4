"""The one translation of Cirrus errors to HTTP responses for DICOMweb.

Every error response has the body ``{"error": message}`` as application/json. STOW-RS reports
instances that cannot be stored in its own response (PS3.18 10.5.3), so an
``InvalidInstanceError`` reaches this table only from the other transactions.

A message may quote a value of the request, such as a PatientName or StudyDate query, which
the client may see again but the log must not keep. So an error is logged with its status and
class, and an ``InvalidParameterError`` also with the name of the parameter and the kind of
error. Neither the message nor the text of an unexpected exception is logged.
"""

from __future__ import annotations

import json
import logging
import traceback
from http import HTTPStatus
from typing import Final

from aws_lambda_powertools.event_handler import Response

from cirrus.access import AccessDeniedError
from cirrus.errors import (
    CirrusError,
    ConflictError,
    DamagedInstanceError,
    InvalidInstanceError,
    InvalidParameterError,
    InvalidRequestError,
    NotAcceptableError,
    NotFoundError,
    PayloadTooLargeError,
    RangeNotSatisfiableError,
    StoreUnavailableError,
    UnsupportedMediaTypeError,
)

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE: Final = "application/json"
# A hint for clients after a 503, not a measured recovery time of S3 or DynamoDB.
RETRY_AFTER_SECONDS: Final = 5

HTTP_STATUS: Final[dict[type[CirrusError], HTTPStatus]] = {
    InvalidRequestError: HTTPStatus.BAD_REQUEST,
    InvalidInstanceError: HTTPStatus.BAD_REQUEST,
    NotFoundError: HTTPStatus.NOT_FOUND,
    AccessDeniedError: HTTPStatus.FORBIDDEN,
    NotAcceptableError: HTTPStatus.NOT_ACCEPTABLE,
    RangeNotSatisfiableError: HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
    ConflictError: HTTPStatus.CONFLICT,
    PayloadTooLargeError: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    UnsupportedMediaTypeError: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    StoreUnavailableError: HTTPStatus.SERVICE_UNAVAILABLE,
    DamagedInstanceError: HTTPStatus.INTERNAL_SERVER_ERROR,
}


def status_of(exc: CirrusError) -> HTTPStatus:
    """Return the HTTP status of ``exc``: that of its nearest class in ``HTTP_STATUS``, else 500."""
    for cls in type(exc).__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    return HTTPStatus.INTERNAL_SERVER_ERROR


def retry_after_headers() -> dict[str, str]:
    """Return the headers of a 503 response: when to retry (RFC 9110 10.2.3)."""
    return {"Retry-After": str(RETRY_AFTER_SECONDS)}


def error_response(exc: CirrusError) -> Response[str]:
    """Translate ``exc`` to its status and error body, and log it without its message."""
    status = status_of(exc)
    headers = retry_after_headers() if status == HTTPStatus.SERVICE_UNAVAILABLE else {}
    level = logging.WARNING if status >= HTTPStatus.INTERNAL_SERVER_ERROR else logging.INFO
    fields: dict[str, object] = {"status": int(status), "error": type(exc).__name__}
    if isinstance(exc, InvalidParameterError):
        fields.update(parameter=exc.parameter, kind=exc.kind)
    logger.log(level, "request failed", extra=fields)
    return json_error(status, str(exc), headers)


def exception_fields(exc: BaseException) -> dict[str, str]:
    """Return the class and the stack of ``exc`` as log fields, without its message.

    The message of an exception that no handler expected can quote request or data set values
    (a pydicom ValueError quotes the value that it rejects), so only the frames are kept.
    """
    frames = traceback.format_list(traceback.extract_tb(exc.__traceback__))
    return {"error": type(exc).__name__, "traceback": "".join(frames)}


def unexpected_error_response(exc: Exception, request_id: str | None) -> Response[str]:
    """Log an error that no handler expected and return a 500 that shows no internals."""
    logger.error("unexpected error", extra={**exception_fields(exc), "request_id": request_id})
    message = "internal error; the request was not completed"
    if request_id:
        message = f"{message} (request id {request_id})"
    return json_error(HTTPStatus.INTERNAL_SERVER_ERROR, message)


def json_error(
    status: HTTPStatus, message: str, headers: dict[str, str] | None = None
) -> Response[str]:
    return Response(
        status_code=int(status),
        content_type=JSON_CONTENT_TYPE,
        body=json.dumps({"error": message}),
        headers=headers,
    )
