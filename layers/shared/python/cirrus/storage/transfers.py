"""The adapter to the transfer area of the archive bucket: staged responses and uploads.

Bodies too large for a buffered Lambda payload travel between client and S3 directly, through
presigned URLs of objects under ``transfers/``::

    transfers/sites/{site}/responses/{id}   a retrieve response, assembled for one request
    transfers/sites/{site}/uploads/{id}     a STOW-RS body that a client PUT for one request

The site is part of every key, so a request of one site never names another site's object,
and ``id`` is a random UUID that only the requesting client learns. A lifecycle rule of the
bucket deletes transfer objects a day after they were written (``infra/``, and
``cirrus.local.resources`` on moto). The prefix lies outside ``sites/``, so transfer objects
never reach the ingest queue.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from cirrus.errors import InvalidRequestError, StoreUnavailableError
from cirrus.storage.keys import validate_site
from cirrus.storage.objects import _translate, read_chunks
from cirrus.storage.tags import tagging_header

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

logger = logging.getLogger(__name__)

TRANSFER_PREFIX: Final = "transfers/"
# Days after which the bucket's lifecycle rule deletes a transfer object.
TRANSFER_EXPIRATION_DAYS: Final = 1
# Size of each part of a multipart upload. S3 takes parts of 5 MiB to 5 GiB, except the last,
# and at most 10,000 parts, so one staged response is at most about 78 GiB.
PART_SIZE: Final = 8 * 1024 * 1024


@dataclass(frozen=True)
class TransferObject:
    """A transfer object as S3 reports it: size in bytes and the Content-Type it was sent with."""

    key: str
    size: int
    content_type: str | None


class TransferStore:
    """Writes, reads and presigns transfer objects in one bucket, encrypted with one KMS key.

    Presigned URLs carry the permissions of the credentials that sign them, which for the
    DICOMweb Lambda are those of its role. ``presigner`` signs them and must sign with SigV4
    (``AwsClients.s3_presigner``), because S3 serves SSE-KMS objects only to SigV4 requests.
    """

    def __init__(
        self, client: S3Client, bucket: str, kms_key_id: str, presigner: S3Client | None = None
    ) -> None:
        self._client = client
        self._presigner = client if presigner is None else presigner
        self.bucket = bucket
        self._kms_key_id = kms_key_id

    @staticmethod
    def new_key(site: str, kind: str) -> str:
        """Return a new random key of ``kind`` (``responses`` or ``uploads``) for ``site``."""
        return transfer_key(site, kind, uuid.uuid4().hex)

    def write(
        self,
        key: str,
        chunks: Iterable[bytes | Path],
        content_type: str,
        tags: Mapping[str, str] | None = None,
    ) -> int:
        """Write the concatenation of ``chunks`` as one object with ``tags``; return its size.

        A ``Path`` in ``chunks`` means the content of its file, which is read in chunks. The
        object is sent in parts of ``PART_SIZE`` bytes, so only one part is held here at a
        time beyond what the caller holds. Returns once S3 has acknowledged the whole object.
        An upload that fails is aborted, and S3 then keeps no part of it.
        """
        options: dict[str, Any] = {
            "ServerSideEncryption": "aws:kms",
            "SSEKMSKeyId": self._kms_key_id,
            "BucketKeyEnabled": True,
        }
        if tags:
            options["Tagging"] = tagging_header(tags)
        try:
            upload_id = self._client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type, **options
            )["UploadId"]
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, key) from exc
        try:
            parts, size = self._upload_parts(key, upload_id, chunks)
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException as exc:
            self._abort(key, upload_id)
            if isinstance(exc, (ClientError, BotoCoreError)):
                raise _translate(exc, key) from exc
            raise
        return size

    def _upload_parts(
        self, key: str, upload_id: str, chunks: Iterable[bytes | Path]
    ) -> tuple[list[dict[str, Any]], int]:
        parts: list[dict[str, Any]] = []
        pending = bytearray()
        size = 0

        def send(data: bytes | bytearray) -> None:
            number = len(parts) + 1
            response = self._client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
            parts.append({"PartNumber": number, "ETag": response["ETag"]})

        for chunk in _file_contents(chunks):
            view = memoryview(chunk)
            size += len(view)
            if pending:
                needed = PART_SIZE - len(pending)
                pending += view[:needed]
                view = view[needed:]
                if len(pending) < PART_SIZE:
                    continue
                send(bytes(pending))
                pending.clear()
            while len(view) >= PART_SIZE:
                send(bytes(view[:PART_SIZE]))
                view = view[PART_SIZE:]
            pending += view
        if pending or not parts:
            # The last part may be smaller than 5 MiB, and an empty object has one empty part.
            send(bytes(pending))
        return parts, size

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            # The lifecycle rule removes incomplete uploads as well, so this is not fatal.
            logger.warning("multipart upload not aborted", extra={"key": key, "error": str(exc)})

    def head(self, key: str) -> TransferObject:
        """Return the size and Content-Type of ``key``; raise ``NotFoundError`` if it is absent."""
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, key) from exc
        return TransferObject(key, int(response["ContentLength"]), response.get("ContentType"))

    def read(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            body: bytes = response["Body"].read()
            return body
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, key) from exc

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, key) from exc

    def presign_get(self, key: str, expires_in: int) -> str:
        """Return a URL that allows GET of ``key`` for ``expires_in`` seconds."""
        return self._presign("get_object", key, expires_in)

    def presign_put(self, key: str, expires_in: int) -> str:
        """Return a URL that allows one PUT of ``key`` for ``expires_in`` seconds.

        The URL signs no encryption headers, so the client sends none, and S3 encrypts the
        object with the bucket's default SSE-KMS key.
        """
        return self._presign("put_object", key, expires_in)

    def _presign(self, operation: str, key: str, expires_in: int) -> str:
        params = {"Bucket": self.bucket, "Key": key}
        try:
            return str(
                self._presigner.generate_presigned_url(
                    operation, Params=params, ExpiresIn=expires_in
                )
            )
        except BotoCoreError as exc:
            raise StoreUnavailableError(f"presigning {key} failed: {type(exc).__name__}") from exc


def transfer_key(site: str, kind: str, transfer_id: str) -> str:
    """Return the key of transfer ``transfer_id`` of ``kind`` for ``site``.

    Raises ``InvalidRequestError`` unless ``transfer_id`` is 32 lowercase hexadecimal digits,
    the form ``new_key`` gives, so that a client cannot name keys outside its site's folder.
    """
    if len(transfer_id) != 32 or any(char not in "0123456789abcdef" for char in transfer_id):
        raise InvalidRequestError(
            f"transfer id {transfer_id[:40]!r} is invalid; use the id that POST /uploads returned"
        )
    return f"{TRANSFER_PREFIX}sites/{validate_site(site)}/{kind}/{transfer_id}"


def _file_contents(chunks: Iterable[bytes | Path]) -> Iterator[bytes]:
    """Yield ``chunks`` with each ``Path`` replaced by its file's content, a chunk at a time."""
    for chunk in chunks:
        if isinstance(chunk, Path):
            yield from read_chunks(chunk)
        else:
            yield chunk
