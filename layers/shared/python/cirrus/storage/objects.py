"""The adapter to the archive bucket: the only code that calls S3."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from cirrus.errors import NotFoundError, StoreUnavailableError
from cirrus.storage.tags import tagging_header

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

logger = logging.getLogger(__name__)

DICOM_CONTENT_TYPE: Final = "application/dicom"
_MISSING_CODES: Final = frozenset({"NoSuchKey", "404", "NotFound"})
# The maximum number of keys in one DeleteObjects request.
MAX_DELETE_KEYS: Final = 1000
# ``put_file`` sends a file of at most this size in one PUT, and a larger one as a multipart
# upload, which keeps one part (``cirrus.storage.transfers.PART_SIZE``) in memory at a time.
SINGLE_PUT_MAX_BYTES: Final = 8 * 1024 * 1024
_FILE_CHUNK_BYTES: Final = 1024 * 1024


class Admission(Protocol):
    """Checks that a write must pass before its object can be read (``ObjectStore.put_after``).

    A store calls ``begin`` and then ``finish``, both on the writing thread, and may do its own
    work in between, such as flushing a file that no reader sees yet. Either may raise to
    refuse the object; the store then keeps nothing of it.
    """

    def begin(self) -> None: ...

    def finish(self) -> None: ...


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    etag: str


class ObjectStore:
    """Reads and writes archive objects in one bucket, encrypted with one KMS key."""

    def __init__(self, client: S3Client, bucket: str, kms_key_id: str) -> None:
        self._client = client
        self.bucket = bucket
        self._kms_key_id = kms_key_id

    def put(
        self,
        key: str,
        body: bytes,
        content_type: str = DICOM_CONTENT_TYPE,
        tags: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Write ``body`` with the object ``tags`` and return only once S3 has acknowledged it.

        S3 writes an object whole or not at all, so a failed call leaves no partial object.
        """
        extra = {"Tagging": tagging_header(tags)} if tags else {}
        try:
            response = self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                ServerSideEncryption="aws:kms",
                SSEKMSKeyId=self._kms_key_id,
                BucketKeyEnabled=True,
                **extra,
            )
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, key) from exc
        return StoredObject(key=key, size=len(body), etag=response["ETag"].strip('"'))

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str = DICOM_CONTENT_TYPE,
        tags: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Write the file ``path`` as object ``key``; return once S3 has acknowledged all of it.

        A file over ``SINGLE_PUT_MAX_BYTES`` goes up in parts, and a multipart upload that
        fails is aborted, so S3 keeps no part of it. The file must not change meanwhile.
        """
        size = path.stat().st_size
        if size <= SINGLE_PUT_MAX_BYTES:
            return self.put(key, path.read_bytes(), content_type, tags)
        # Imported here because cirrus.storage.transfers imports this module.
        from cirrus.storage.transfers import TransferStore

        uploader = TransferStore(self._client, self.bucket, self._kms_key_id)
        size = uploader.write(key, read_chunks(path), content_type, tags)
        try:
            etag = self._client.head_object(Bucket=self.bucket, Key=key)["ETag"]
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, key) from exc
        return StoredObject(key=key, size=size, etag=etag.strip('"'))

    def put_after(
        self,
        key: str,
        body: bytes,
        admission: Admission,
        tags: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Write ``body`` as ``put`` does, if ``admission`` lets it.

        S3 makes an object readable once its PUT succeeds, so this store runs the admission's
        ``begin`` and ``finish`` first and then writes. If either raises, nothing is stored.
        """
        admission.begin()
        admission.finish()
        return self.put(key, body, tags=tags)

    def put_file_after(
        self,
        key: str,
        path: Path,
        admission: Admission,
        tags: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Write the file ``path`` as ``put_file`` does, if ``admission`` lets it."""
        admission.begin()
        admission.finish()
        return self.put_file(key, path, tags=tags)

    def get(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read()  # type: ignore[no-any-return]
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, key) from exc

    def local_file(self, key: str) -> Path | None:
        """Return the file that contains object ``key``, or None when objects are not files.

        S3 objects are not, so this store returns None. A store that returns a path lets
        readers copy or link the file instead of reading it. The file may be missing.
        """
        return None

    def get_range(self, key: str, start: int, end: int | None = None) -> tuple[bytes, int]:
        """Return the bytes from ``start`` to ``end`` (exclusive) and the object's size."""
        byte_range = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key, Range=byte_range)
            body: bytes = response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b"", self.size(key)
            raise _translate(exc, key) from exc
        except BotoCoreError as exc:
            raise _translate(exc, key) from exc
        content_range = response.get("ContentRange")
        total = int(content_range.rsplit("/", 1)[1]) if content_range else len(body)
        return body, total

    def size(self, key: str) -> int:
        try:
            return int(self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, key) from exc

    def delete(self, keys: Sequence[str]) -> None:
        """Delete the objects ``keys``; a key that does not exist counts as deleted.

        S3 deletes up to 1,000 keys per request. Raises ``StoreUnavailableError`` naming the
        first key S3 could not delete; the others of its batch may be deleted already.
        """
        for start in range(0, len(keys), MAX_DELETE_KEYS):
            batch = keys[start : start + MAX_DELETE_KEYS]
            try:
                response = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            except (ClientError, BotoCoreError) as exc:
                raise _translate(exc, batch[0]) from exc
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise StoreUnavailableError(
                    f"S3 delete of {first.get('Key')} failed with {first.get('Code') or 'an error'}"
                )

    def tags(self, key: str) -> dict[str, str]:
        """Return the object tags of ``key``."""
        try:
            response = self._client.get_object_tagging(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, key) from exc
        return {tag["Key"]: tag["Value"] for tag in response.get("TagSet", ())}

    def etag(self, key: str) -> str:
        """Return the ETag of object ``key`` without quotes."""
        try:
            return str(self._client.head_object(Bucket=self.bucket, Key=key)["ETag"]).strip('"')
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, key) from exc

    def list_keys(self, prefix: str, start_after: str = "") -> Iterator[StoredObject]:
        """Yield the objects under ``prefix`` in key order, after ``start_after`` if given."""
        paginator = self._client.get_paginator("list_objects_v2")
        extra = {"StartAfter": start_after} if start_after else {}
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, **extra):
                for item in page.get("Contents", ()):
                    yield StoredObject(item["Key"], item["Size"], item["ETag"].strip('"'))
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, prefix) from exc

    def child_names(self, prefix: str) -> list[str]:
        """Return the names of the folders directly under ``prefix`` (which ends with ``/``)."""
        paginator = self._client.get_paginator("list_objects_v2")
        names = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", ()):
                    names.append(common["Prefix"][len(prefix) :].rstrip("/"))
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, prefix) from exc
        return sorted(names)


def read_chunks(path: Path, chunk_size: int = _FILE_CHUNK_BYTES) -> Iterator[bytes]:
    """Yield the content of the file ``path`` in chunks of at most ``chunk_size`` bytes."""
    with path.open("rb") as file:
        while chunk := file.read(chunk_size):
            yield chunk


def _translate(exc: ClientError | BotoCoreError, key: str) -> Exception:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _MISSING_CODES:
            return NotFoundError(f"object {key} not found")
        return StoreUnavailableError(f"S3 request for {key} failed with {code or 'an error'}")
    return StoreUnavailableError(f"S3 request for {key} failed: {type(exc).__name__}")
