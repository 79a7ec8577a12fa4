"""Series and study metadata (PS3.18 10.4) kept as one stored gzip object per series or study.

A viewer opens a series by requesting its metadata. Building that response from the instance
records takes a Query, one decompression per instance and one JSON encoding per request.
Here it is built once, stored in S3 as the exact gzip body of the response, and sent as
stored to clients that accept gzip (decompressed for the others).

Exactness comes from a version tag, not from rebuilding on every change:

- Each index transaction that adds or replaces an instance sets ``metadata_version`` of its
  series and study records to a new random token (``cirrus.index.writer``). A delete
  decrements ``instance_count`` in its transaction. The tag of a record is the token and the
  count together, so every change of the instance set gives a tag never seen before. A delete
  alone keeps the token but lowers the count, and a later store sets a new token.
- A stored bundle carries the tag it was built from in its gzip header (the FCOMMENT field of
  RFC 1952, which clients' gzip decoders ignore), so one S3 PUT writes the tag and the body.
- A read takes the record's tag with a consistent GetItem and serves the stored bundle only
  if its tag is the same. Otherwise it rebuilds from a consistent Query and reads the tag
  again. When the tag did not change while the Query ran, the bundle is exactly that state,
  and it is stored for the next reads. When it did change, the build is repeated, and after
  ``BUILD_ATTEMPTS`` builds the last one is served unstored with an ETag of its own bytes.

Debounce: ingest does not build bundles itself. It sends a delayed request per indexed
instance, and only a request whose version is still current when it arrives builds, so a
1,000-instance series sent instance by instance is built about once, after its last instance
(``cirrus.dicomweb.bundle_refresh``). Reads rebuild whatever that missed, for example a
series whose base URL no client had used yet.

BulkDataURIs must be absolute URLs under the request's base URL, so a stored bundle belongs
to one base URL. Its key ends with a hash of the base URL. A deployment is expected to be
reached under few base URLs (the API's domain, perhaps a custom domain), and ingest
precomputes bundles for at most ``MAX_BASE_URLS`` of them per site. The instance
metadata stores its references as ``bulkdata/{path}``. A build makes them absolute with one
byte replacement per instance, without parsing the JSON.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from cirrus.dicom.dicomjson import BULKDATA_PREFIX
from cirrus.errors import NotFoundError
from cirrus.index.models import INSTANCE, STUDY, IndexRecord, get_record, series_sk, study_pk
from cirrus.storage.objects import ObjectStore

logger = logging.getLogger(__name__)

BUNDLE_CONTENT_TYPE: Final = "application/gzip"
# The base URLs that bundles are precomputed for, most recently added first.
MAX_BASE_URLS: Final = 4
# A read rebuilds at most this many times while writes keep changing the tag.
BUILD_ATTEMPTS: Final = 3
# zlib's default trade-off between size and speed.
COMPRESS_LEVEL: Final = 6
READ_WORKERS: Final = 8

_GZIP_MAGIC: Final = b"\x1f\x8b"
_DEFLATE: Final = 8
_FLAG_COMMENT: Final = 0x10
_OS_UNKNOWN: Final = 255
_TAG_PREFIX: Final = "cirrus-metadata-tag="
_MAX_COMMENT: Final = 256
_BULK_REF: Final = b'"BulkDataURI":"' + BULKDATA_PREFIX.encode()


@dataclass(frozen=True)
class Bundle:
    """The metadata of one series or study as a gzip body, with its strong entity tag."""

    gzip_body: bytes
    entity_tag: str

    def body(self) -> bytes:
        """Return the uncompressed DICOM JSON."""
        return gzip.decompress(self.gzip_body)

    def etag(self, gzip_coded: bool) -> str:
        """Return the ETag of the gzip-coded or of the identity representation."""
        return representation_etag(self.entity_tag, gzip_coded)


def representation_etag(entity_tag: str, gzip_coded: bool) -> str:
    """Return the quoted ETag for ``entity_tag`` in one content coding.

    The two codings are different representations, so their strong validators differ.
    """
    return f'"{entity_tag}.gz"' if gzip_coded else f'"{entity_tag}"'


class MetadataBundles:
    """Builds, stores and serves the metadata bundles of series and studies."""

    def __init__(self, model: type[IndexRecord], store: ObjectStore) -> None:
        self._model = model
        self._store = store

    def record_tag(self, site: str, study: str, series: str | None) -> str | None:
        """Return the tag of the current state of a series (of a study when ``series`` is None).

        None means the record has no version yet, so no stored bundle can be trusted.
        Raises ``NotFoundError`` when the series or study is not indexed.
        """
        record = self._record(site, study, series)
        if not record.metadata_version:
            return None
        return f"{record.metadata_version}.{int(record.instance_count or 0)}"

    def version(self, site: str, study: str, series: str | None) -> str | None:
        """Return the ``metadata_version`` of a series or study; ``NotFoundError`` if absent."""
        return self._record(site, study, series).metadata_version

    def _record(self, site: str, study: str, series: str | None) -> IndexRecord:
        sort_key = series_sk(series) if series is not None else STUDY
        record = get_record(self._model, study_pk(site, study), sort_key, consistent_read=True)
        if record is None:
            scope = f"series {series} of study {study}" if series is not None else f"study {study}"
            raise NotFoundError(f"{scope} not found")
        return record

    def fetch(
        self, site: str, study: str, series: str | None, base_url: str, tag: str | None
    ) -> Bundle:
        """Return the metadata bundle of a series (of a study when ``series`` is None).

        ``tag`` is what ``record_tag`` returned just before. Raises ``NotFoundError`` when the
        series or study has no indexed instance.
        """
        key = bundle_key(site, study, series, base_url)
        if tag is not None:
            stored = self._stored(key)
            if stored is not None and read_tag(stored) == tag:
                return Bundle(stored, entity_tag(tag, base_url))
        for _ in range(BUILD_ATTEMPTS):
            body = self._build(site, study, series, base_url)
            if tag is None:
                break
            after = self.record_tag(site, study, series)
            if after == tag:
                compressed = compress_bundle(body, tag)
                self._store.put(key, compressed, content_type=BUNDLE_CONTENT_TYPE)
                self._remember(site, base_url)
                return Bundle(compressed, entity_tag(tag, base_url))
            tag = after
        # Unversioned records, or writes that kept changing the tag during each build: the last
        # build is served unstored, with a validator of its own bytes.
        digest = hashlib.sha256(body).hexdigest()[:32]
        return Bundle(compress_bundle(body, None), f"sha256-{digest}")

    def base_urls(self, site: str) -> list[str]:
        """Return the base URLs that clients of ``site`` read bundles under, newest first."""
        stored = self._stored(base_urls_key(site))
        if stored is None:
            return []
        try:
            urls = json.loads(stored)
        except ValueError:
            urls = None
        if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
            logger.warning("base URL list is invalid; it is ignored", extra={"site": site})
            return []
        return urls

    def _remember(self, site: str, base_url: str) -> None:
        """Add ``base_url`` to the site's list, so that ingest precomputes bundles for it.

        Called after each stored build, which is rare, so the list is read each time.
        """
        urls = self.base_urls(site)
        if base_url in urls:
            return
        # NOTE: two processes adding different URLs at once can lose one of them. The lost
        # one is added again by the next build stored for it.
        updated = [base_url, *urls][:MAX_BASE_URLS]
        body = json.dumps(updated).encode()
        self._store.put(base_urls_key(site), body, content_type="application/json")

    def _stored(self, key: str) -> bytes | None:
        try:
            return self._store.get(key)
        except NotFoundError:
            return None

    def _build(self, site: str, study: str, series: str | None, base_url: str) -> bytes:
        """Return the DICOM JSON array of the indexed instances, in key order."""
        model = self._model
        prefix = f"{INSTANCE}#{series}#" if series is not None else f"{INSTANCE}#"
        records = list(
            model.query(study_pk(site, study), model.sk.startswith(prefix), consistent_read=True)
        )
        if not records:
            scope = f"series {series} of study {study}" if series is not None else f"study {study}"
            raise NotFoundError(f"{scope} not found")
        parts = [
            _absolute_refs(json_bytes, f"{base_url}/studies/{study}/{_instance_path(record)}")
            for record, json_bytes in zip(records, self._metadata(records), strict=True)
        ]
        return b"[" + b",".join(parts) + b"]"

    def _metadata(self, records: list[IndexRecord]) -> Iterator[bytes]:
        """Return the stored compact JSON of each record, reading sidecar objects in parallel."""
        sidecars = [r.metadata_key for r in records if r.metadata is None and r.metadata_key]
        fetched: dict[str, bytes] = {}
        if sidecars:
            with ThreadPoolExecutor(max_workers=min(READ_WORKERS, len(sidecars))) as pool:
                fetched = dict(zip(sidecars, pool.map(self._store.get, sidecars), strict=True))
        for record in records:
            if record.metadata is not None:
                yield zlib.decompress(record.metadata)
            elif record.metadata_key:
                yield zlib.decompress(fetched[record.metadata_key])
            else:
                raise NotFoundError(f"instance {record.sk} has no stored metadata")


def bundle_key(site: str, study: str, series: str | None, base_url: str) -> str:
    """Return the object key of the bundle of a series or study for one base URL.

    NOTE: one object is stored per base URL that a client used. Behind API Gateway the Host
    is the API's own domain, but the local HTTP server takes any Host header. A DELETE
    deletes the bundles of the study and series it touches (``cirrus.dicomweb.delete``).
    """
    scope = f"sites/{site}/studies/{study}"
    if series is not None:
        scope += f"/series/{series}"
    return f"{scope}/metadata/{_base_id(base_url)}.json.gz"


def base_urls_key(site: str) -> str:
    return f"sites/{site}/metadata/base-urls.json"


def compress_bundle(body: bytes, tag: str | None) -> bytes:
    """Return ``body`` as one gzip member whose header comment carries ``tag``.

    The modification time is 0, so the same body and tag always give the same bytes.
    """
    comment = b"" if tag is None else (_TAG_PREFIX + tag).encode("latin-1") + b"\0"
    flags = _FLAG_COMMENT if comment else 0
    header = _GZIP_MAGIC + struct.pack("<BBIBB", _DEFLATE, flags, 0, 0, _OS_UNKNOWN) + comment
    compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(body) + compressor.flush()
    trailer = struct.pack("<II", zlib.crc32(body), len(body) & 0xFFFFFFFF)
    return header + deflated + trailer


def read_tag(gzip_body: bytes) -> str | None:
    """Return the tag that ``compress_bundle`` wrote into a gzip header, or None."""
    if len(gzip_body) < 10 or gzip_body[:2] != _GZIP_MAGIC or gzip_body[3] != _FLAG_COMMENT:
        return None
    end = gzip_body.find(b"\0", 10, 10 + _MAX_COMMENT)
    if end < 0:
        return None
    comment = gzip_body[10:end].decode("latin-1")
    if not comment.startswith(_TAG_PREFIX):
        return None
    return comment.removeprefix(_TAG_PREFIX)


def _absolute_refs(json_bytes: bytes, instance_url: str) -> bytes:
    # The metadata is compact JSON, where a quote inside a string is escaped, so this byte
    # sequence only occurs as a BulkDataURI member.
    return json_bytes.replace(_BULK_REF, b'"BulkDataURI":"' + instance_url.encode() + b"/bulkdata/")


def _instance_path(record: IndexRecord) -> str:
    _, series, sop = record.sk.split("#", 2)
    return f"series/{series}/instances/{sop}"


def entity_tag(tag: str, base_url: str) -> str:
    """Return the entity tag of a bundle built from the record tag ``tag`` for ``base_url``."""
    return f"{tag}.{_base_id(base_url)}"


def _base_id(base_url: str) -> str:
    return hashlib.sha256(base_url.encode()).hexdigest()[:16]
