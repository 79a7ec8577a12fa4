"""STOW-RS bodies larger than a Lambda request: uploaded to S3 first, then stored by reference.

API Gateway REST accepts request payloads up to 10 MB, and Lambda takes events up to 6 MB,
which with base64 leaves about 4.5 MB for a STOW-RS body. A client with a larger body:

1. ``POST {base}/uploads`` gets 201 with an upload id and a presigned PUT URL of S3;
2. PUTs the multipart/related body, byte for byte as it would POST it, to that URL;
3. ``POST {base}/uploads/{id}/studies`` (or ``.../studies/{study}``) with the body's
   Content-Type, and no body, gets the STOW-RS response for the uploaded body.

The third step runs the same checks and write path as STOW-RS, so the response reports each
instance only after S3 has acknowledged it. The uploaded body is deleted once the instances
are stored or have failed, except after a storage failure (503), when the client may send
the third step again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from cirrus.errors import CirrusError, NotFoundError, PayloadTooLargeError
from cirrus.storage.transfers import TransferStore, transfer_key

logger = logging.getLogger(__name__)

UPLOADS_KIND: Final = "uploads"
# Lifetime of the presigned PUT URL: long enough to start the PUT of a large body.
PRESIGNED_PUT_SECONDS: Final = 900
# NOTE: the stored body is read whole and split in memory, about three times its size, so
# this maximum is sized for a Lambda function with 3 GB of memory or more.
MAX_UPLOAD_BYTES: Final = 512 * 1024 * 1024


@dataclass(frozen=True)
class UploadTicket:
    """A new upload: its id and the URL to PUT the body to before ``expires_in`` seconds."""

    upload_id: str
    url: str
    expires_in: int

    def as_json(self, location: str) -> dict[str, Any]:
        return {
            "uploadId": self.upload_id,
            "uploadUrl": self.url,
            "method": "PUT",
            "expiresIn": self.expires_in,
            "storeUrl": f"{location}/studies",
            "maxBytes": MAX_UPLOAD_BYTES,
        }


def create_upload(transfers: TransferStore, site: str) -> UploadTicket:
    """Return a new upload of ``site`` with a presigned PUT URL of its key."""
    key = transfers.new_key(site, UPLOADS_KIND)
    upload_id = key.rsplit("/", 1)[1]
    url = transfers.presign_put(key, PRESIGNED_PUT_SECONDS)
    logger.info("upload created", extra={"key": key})
    return UploadTicket(upload_id, url, PRESIGNED_PUT_SECONDS)


def read_upload(
    transfers: TransferStore, site: str, upload_id: str, content_type: str | None
) -> tuple[str | None, bytes]:
    """Return the Content-Type and bytes of an uploaded body.

    ``content_type`` is that of the request. Without it, the Content-Type the client sent
    with its PUT is used. Raises ``NotFoundError`` when nothing was uploaded under the id
    (or the lifecycle rule has deleted it) and ``PayloadTooLargeError`` above
    ``MAX_UPLOAD_BYTES``, after deleting the body.
    """
    key = transfer_key(site, UPLOADS_KIND, upload_id)
    try:
        uploaded = transfers.head(key)
    except NotFoundError as exc:
        raise NotFoundError(
            f"upload {upload_id} has no body; PUT the body to the uploadUrl that POST /uploads "
            "returned before it expires, then send this request"
        ) from exc
    if uploaded.size > MAX_UPLOAD_BYTES:
        discard_upload(transfers, site, upload_id)
        raise PayloadTooLargeError(
            f"uploaded body of {uploaded.size} bytes exceeds the maximum of {MAX_UPLOAD_BYTES} "
            "bytes; split the instances over several uploads"
        )
    return content_type or uploaded.content_type, transfers.read(key)


def discard_upload(transfers: TransferStore, site: str, upload_id: str) -> None:
    """Delete an uploaded body. A failure is logged, because the lifecycle rule deletes it too."""
    key = transfer_key(site, UPLOADS_KIND, upload_id)
    try:
        transfers.delete(key)
    except CirrusError as exc:
        logger.warning("uploaded body not deleted", extra={"key": key, "error": str(exc)})
