"""Hand a DICOMweb request that needs pixel codecs to the Lambda function that has them.

pydicom imports numpy and every installed codec plugin when it is imported, which would double
the cold start of the DICOMweb function. So that function is deployed without them, and a
second function, the pixel function, runs the same handler with the codec layer. QIDO-RS,
STOW-RS, metadata, bulk data, native frames and retrieves in the stored transfer syntax are
served by the DICOMweb function. When a request turns out to need decoding or encoding
(a transcode, a rendered image or a thumbnail), ``cirrus.dicom.transcode`` raises
``CodecsUnavailable`` and the handler sends the unchanged API Gateway event here.

The pixel function runs the whole request again, so it makes its own choices of transfer
syntax and returns 406 itself when its codecs cannot produce what was asked. Its response is
returned as it is: the pixel function has already staged a large body and added the CORS
headers.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

# Seconds a client should wait after a 503 from a throttled pixel function.
THROTTLED_RETRY_AFTER: Final = 1
_THROTTLING_CODES: Final = frozenset(
    {"TooManyRequestsException", "EC2ThrottledException", "ResourceNotReadyException"}
)


class PixelForwarder:
    """Invokes the pixel function synchronously with one API Gateway proxy event."""

    def __init__(self, client: Any, function_name: str) -> None:
        self._client = client
        self.function_name = function_name

    def forward(self, event: dict[str, Any]) -> dict[str, Any]:
        """Return the pixel function's proxy response to ``event``, or an error response.

        A throttled invocation gives 503 with Retry-After. Any other failure of the
        invocation or of the function gives 502. Neither the event nor the function's error
        message is logged, because both may carry patient data.
        """
        try:
            answer = self._client.invoke(
                FunctionName=self.function_name,
                InvocationType="RequestResponse",
                Payload=json.dumps(event).encode(),
            )
            payload = answer["Payload"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            logger.error("pixel function not invoked", extra={"error_code": code})
            if code in _THROTTLING_CODES:
                return error_response(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    "the image service is busy; retry the request",
                    retry_after=THROTTLED_RETRY_AFTER,
                )
            return _bad_gateway()
        except BotoCoreError as exc:
            logger.error("pixel function not invoked", extra={"error_type": type(exc).__name__})
            return _bad_gateway()
        if answer.get("FunctionError"):
            kind = _error_type(payload)
            failure = {"function_error": answer["FunctionError"], "error_type": kind}
            logger.error("pixel function failed", extra=failure)
            return _bad_gateway()
        return _proxy_response(payload)


def error_response(
    status: HTTPStatus, message: str, retry_after: int | None = None
) -> dict[str, Any]:
    """Return an API Gateway proxy response with the JSON error body of every DICOMweb error."""
    headers = {"Content-Type": "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return {
        "statusCode": int(status),
        "headers": headers,
        "multiValueHeaders": {},
        "body": json.dumps({"error": message}),
        "isBase64Encoded": False,
    }


def _bad_gateway() -> dict[str, Any]:
    return error_response(
        HTTPStatus.BAD_GATEWAY, "the image service failed; the request was not completed"
    )


def _proxy_response(payload: bytes) -> dict[str, Any]:
    try:
        response = json.loads(payload)
    except ValueError:
        response = None
    if not isinstance(response, dict) or not isinstance(response.get("statusCode"), int):
        logger.error("pixel function returned no proxy response")
        return _bad_gateway()
    return response


def _error_type(payload: bytes) -> str | None:
    """Return the errorType of a Lambda error payload; its errorMessage is never read."""
    try:
        error = json.loads(payload)
    except ValueError:
        return None
    kind = error.get("errorType") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else None
