"""Delivery of responses larger than a buffered Lambda payload: 303 See Other to S3.

The DICOMweb Lambda sits behind an API Gateway REST API with a buffered Lambda proxy
integration. Lambda rejects a buffered response whose payload (the proxy result as JSON, with
a binary body base64-encoded) exceeds 6 MB, so a raw body above about 4.5 MB cannot be
returned. Such a response is written to a transfer object instead (``cirrus.storage.transfers``)
and the client gets ``303 See Other`` with a short-lived presigned GET URL of that object in
Location. S3 returns the object with the Content-Type of the original response, so the client
reads the same multipart/related body it would have read from the API.

``stage_parts`` stages a body that is encoded part by part as its parts are read, and the app
uses it for study, series and instance retrieves. ``ResponseStager`` stages any other result
that does not fit, from its finished body, and the handler applies it to every result.

HTTP clients follow 303 with a GET (RFC 9110 15.4.4): requests, and so dicomweb-client, and
browsers do. requests drops the Authorization header when the redirect leaves the API's host,
which S3 requires, because it rejects a request signed both in the query and in a header.

Only 200 responses are staged. A 206 response to a Range request is not, because clients send
their Range header on to the redirect target, where it would select bytes of the whole
multipart body. Such a request gets 416 with a message to ask for a smaller range.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final

from cirrus.dicomweb.multipart import FilePart, Part, iter_multipart_files
from cirrus.storage.transfers import TransferStore

logger = logging.getLogger(__name__)

# Lambda's maximum payload of a synchronous invocation, for the request and for the response,
# which the Lambda quotas page gives as 6 MB. API Gateway REST APIs reject request payloads
# over 10 MB (API Gateway quotas). Neither page says whether MB means 10^6 or 2^20 bytes, so
# the smaller reading is used.
LAMBDA_PAYLOAD_LIMIT: Final = 6_000_000
API_GATEWAY_PAYLOAD_LIMIT: Final = 10_000_000
# Lifetime of a presigned URL of a staged response. The client follows the redirect at once.
# NOTE: that S3 checks the expiry only when a GET starts, so that a slow download of a large
# response is not cut off, is assumed, not verified.
PRESIGNED_GET_SECONDS: Final = 120
RESPONSES_KIND: Final = "responses"
# Bodies above this size cannot be returned buffered: base64 makes them a third larger, and
# the rest of the proxy result needs room as well.
MAX_BUFFERED_BODY: Final = LAMBDA_PAYLOAD_LIMIT * 3 // 4 - 64 * 1024

_JSON: Final = "application/json"
# Headers of the original response that stay on the redirect: CORS lets a browser page read
# the 303, Vary keeps caches apart.
_KEPT_HEADER_PREFIXES: Final = ("access-control-", "vary")


class PayloadLimitError(RuntimeError):
    """A buffered Lambda response exceeds ``LAMBDA_PAYLOAD_LIMIT``; on AWS it would fail."""


@dataclass(frozen=True)
class ResponseStager:
    """Turns a proxy result too large for Lambda into a 303 to a staged copy of its body."""

    transfers: TransferStore
    site: str
    limit: int = LAMBDA_PAYLOAD_LIMIT

    def deliver(self, result: dict[str, Any]) -> dict[str, Any]:
        """Return ``result`` if it fits a buffered Lambda response, else its replacement.

        The replacement is a 303 whose Location is a presigned URL of the staged body, or 416
        for a 206 response. Raises ``PayloadLimitError`` for a large response of another
        status, which no route produces.
        """
        size = payload_size(result)
        if size <= self.limit:
            return result
        status = int(result.get("statusCode", 200))
        if status == HTTPStatus.PARTIAL_CONTENT:
            return proxy_error(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                f"the requested range is too large to return in one response; request ranges "
                f"of at most {self.limit * 3 // 4 // 1_000_000} MB, or omit Range to be "
                "redirected to the whole value",
            )
        if status != HTTPStatus.OK:
            raise PayloadLimitError(
                f"a {status} response of {size} bytes exceeds the Lambda payload limit"
            )
        return self._stage(result)

    def _stage(self, result: dict[str, Any]) -> dict[str, Any]:
        content_type = header_value(result, "Content-Type") or "application/octet-stream"
        body = response_body(result)
        url, size = stage_body(self.transfers, self.site, [body], content_type)
        del body
        headers = _kept_headers(result)
        for name, value in see_other_headers(url).items():
            headers[name] = [value]
        return {
            "statusCode": int(HTTPStatus.SEE_OTHER),
            "headers": {},
            "multiValueHeaders": headers,
            "body": see_other_note(url, size),
            "isBase64Encoded": False,
        }


def stage_body(
    transfers: TransferStore, site: str, chunks: Iterable[bytes | Path], content_type: str
) -> tuple[str, int]:
    """Write a response body to a new transfer object; return its presigned URL and size.

    A ``Path`` in ``chunks`` means the content of its file.
    """
    key = transfers.new_key(site, RESPONSES_KIND)
    size = transfers.write(key, chunks, content_type)
    logger.info("response staged for redirect", extra={"key": key, "size": size})
    return transfers.presign_get(key, PRESIGNED_GET_SECONDS), size


def stage_parts(
    transfers: TransferStore, site: str, parts: Iterable[Part | FilePart], root_type: str
) -> tuple[str, int]:
    """Stage ``parts`` as one multipart/related body, encoded and sent one part at a time.

    The file of a ``FilePart`` goes to ``transfers`` as a ``Path``, which the local stack's
    store links or copies without reading it (``cirrus.local.transfers``).
    """
    chunks, content_type = iter_multipart_files(parts, root_type)
    return stage_body(transfers, site, chunks, content_type)


def see_other_headers(url: str) -> dict[str, str]:
    """Return the headers of a 303 to a staged response, besides those of CORS."""
    return {"Location": url, "Cache-Control": "no-store", "Content-Type": _JSON}


def see_other_note(url: str, size: int) -> str:
    """Return the short JSON body of a 303 to a staged response (RFC 9110 15.4.4)."""
    return json.dumps(
        {"message": f"the {size}-byte response is at the URL in Location", "url": url}
    )


def _kept_headers(result: Mapping[str, Any]) -> dict[str, list[str]]:
    kept: dict[str, list[str]] = {}
    for name, value in (result.get("headers") or {}).items():
        if name.lower().startswith(_KEPT_HEADER_PREFIXES):
            kept[name] = [str(value)]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        if name.lower().startswith(_KEPT_HEADER_PREFIXES):
            kept[name] = [str(value) for value in values]
    return kept


def payload_size(result: Mapping[str, Any]) -> int:
    """Return the size in bytes of ``result`` serialized as the JSON that Lambda returns.

    A base64 body is ASCII and needs no escaping, so only the other fields are serialized.
    """
    body = result.get("body")
    if not isinstance(body, str):
        return len(json.dumps(result).encode())
    rest = json.dumps({**result, "body": ""}).encode()
    if result.get("isBase64Encoded"):
        return len(rest) + len(body)
    return len(rest) + len(json.dumps(body).encode()) - 2


def check_payload(result: Mapping[str, Any], limit: int = LAMBDA_PAYLOAD_LIMIT) -> None:
    """Raise ``PayloadLimitError`` if ``result`` is larger than a buffered Lambda response."""
    size = payload_size(result)
    if size > limit:
        raise PayloadLimitError(
            f"a buffered Lambda response of {size} bytes exceeds the {limit}-byte payload limit"
        )


def header_value(result: Mapping[str, Any], name: str) -> str | None:
    """Return the value of header ``name`` in a proxy result, as API Gateway would merge it."""
    lower = name.lower()
    for key, values in (result.get("multiValueHeaders") or {}).items():
        if key.lower() == lower and values:
            return str(values[0])
    for key, value in (result.get("headers") or {}).items():
        if key.lower() == lower:
            return str(value)
    return None


def response_body(result: Mapping[str, Any]) -> bytes:
    body = result.get("body") or ""
    if result.get("isBase64Encoded"):
        return base64.b64decode(body)
    return str(body).encode()


def proxy_error(status: HTTPStatus, message: str) -> dict[str, Any]:
    """Return a proxy result with the JSON error body that ``cirrus.dicomweb.errors`` uses."""
    return {
        "statusCode": int(status),
        "headers": {"Content-Type": _JSON},
        "multiValueHeaders": {},
        "body": json.dumps({"error": message}),
        "isBase64Encoded": False,
    }
