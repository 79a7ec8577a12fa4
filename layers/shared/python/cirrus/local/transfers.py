"""The local stack's transfer objects: files in the data folder, served by signed URLs.

On AWS, staged responses and uploaded STOW-RS bodies are S3 objects that clients reach through
presigned URLs (``cirrus.storage.transfers``). Locally ``FolderTransferStore`` keeps them as
files under the data folder's ``transfers`` folder, at the path of their key, and its URLs
point to the local HTTP server, where ``TransferSite`` serves them under ``/transfers/``:

- A URL carries an expiry (``expires``, Unix seconds) and an HMAC-SHA256
  ``signature`` of method, key and expiry, made with a random key that each store draws when
  it is created. So a URL works without credentials, for one object and one method, until it
  expires, and no longer than the stack runs. Any other request gets 403. HEAD is allowed
  with a GET URL.
- The path is the object's key, which contains the site and a random id, never patient data.
- GET streams the file with the Content-Type it was written with, Content-Length and
  ``Cache-Control: no-store``. Like the archive bucket on AWS, which has no CORS rule, it
  sends no CORS headers: the 303 that leads here carries those of DICOMweb.
- PUT writes the body to a temporary file and renames it into place, so a reader never sees
  part of a body.
- A body written with files of the archive (a ``Path`` among the chunks of ``write``, such as
  the instances of a WADO-RS retrieve) is a folder of hard links to those files, a file of
  the bytes between them and a JSON list of the segments in order. So staging a series costs
  one link per instance instead of a copy of its bytes. The archive replaces a file by
  renaming a new one into place and never changes it, so a link keeps the content that was
  linked. The folder is built under a temporary name and renamed into place.
- A staged response is deleted once the last URL presigned for it expires. An upload is
  deleted as S3's lifecycle rule deletes it, a day after it was written, unless the STOW-RS
  request that stores it deletes it first. Expired files are removed on each write and each
  presign. A new store deletes every file it finds, because their URLs were signed with the
  key of an earlier run. The local stack also removes expired files every
  ``SWEEP_SECONDS`` (``sweep_every``), so that a deleted instance does not stay on disk in a
  staged body that nothing reads.

Files are flushed before the rename but not synced to disk: a transfer object lost in a crash
is a request that the client sends again.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final
from urllib.parse import urlencode

from werkzeug.exceptions import ClientDisconnected
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import FileWrapper

from cirrus.errors import NotFoundError, StoreUnavailableError
from cirrus.local.http import raw_request_path
from cirrus.storage.transfers import (
    TRANSFER_EXPIRATION_DAYS,
    TRANSFER_PREFIX,
    TransferObject,
    TransferStore,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger(__name__)

TRANSFERS_FOLDER: Final = "transfers"
# Seconds after which an upload, or a response that was never presigned, is deleted: the
# lifetime that the bucket's lifecycle rule gives transfer objects on AWS.
RETENTION_SECONDS: Final = TRANSFER_EXPIRATION_DAYS * 86_400
# S3's maximum size of an object sent in one PUT (5 GiB).
MAX_PUT_BYTES: Final = 5 * 1024**3
_CHUNK_BYTES: Final = 1024 * 1024
# How often the local stack removes expired transfer objects besides each write and presign.
SWEEP_SECONDS: Final = 10.0
_INCOMING_PREFIX: Final = ".incoming-"
# The Content-Type of each object is kept in a file beside it, named with this suffix. Keys
# end in a hexadecimal id, so no key ends with it.
_TYPE_SUFFIX: Final = ".content-type"
# A body written with files is a folder named with this suffix, holding the segments.
_LINKED_SUFFIX: Final = ".linked"
# In that folder: the bytes between the files, and the JSON list of [name, offset, length]
# of each segment of the body in order. The linked files are named by their position.
_BYTES_NAME: Final = "bytes"
_LAYOUT_NAME: Final = "layout.json"
_RESPONSES_FOLDER: Final = "/responses/"


class FolderTransferStore(TransferStore):
    """Transfer objects as files under ``root``, presigned as URLs of ``base_url``.

    ``base_url`` (``http://127.0.0.1:{port}``) is set once the HTTP server has its port, and
    presigning fails with ``StoreUnavailableError`` before that.
    """

    def __init__(self, root: Path, bucket: str, base_url: str | None = None) -> None:
        self.bucket = bucket
        self.root = root.resolve()
        self.base_url = base_url
        self._signing_key = secrets.token_bytes(32)
        # Unix time after which each object with a known lifetime is deleted.
        self._deadlines: dict[str, float] = {}
        self._presigned: set[str] = set()
        # The number of open readers of each linked body, whose deletion waits until it is 0.
        self._readers: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)

    def write(
        self,
        key: str,
        chunks: Iterable[bytes | Path],
        content_type: str,
        tags: Mapping[str, str] | None = None,
    ) -> int:
        """Write the concatenation of ``chunks`` as the object ``key``; return its size.

        A ``Path`` means the content of its file, which is linked, or copied where the
        file system cannot link it. Raises ``NotFoundError`` when such a file is missing.
        ``tags`` are accepted for the interface and dropped, as nothing reads them locally.
        """
        self.remove_expired()
        path = self.path(key)
        try:
            self._write_type(path, content_type)
            size = _write_body(path, chunks)
        except OSError as exc:
            raise StoreUnavailableError(f"write of {key} failed: {exc.strerror}") from exc
        with self._lock:
            self._deadlines.setdefault(key, time.time() + RETENTION_SECONDS)
        return size

    def write_stream(self, key: str, stream: IO[bytes], length: int, content_type: str) -> None:
        """Write ``length`` bytes of ``stream`` to the file of ``key``.

        Raises ``EOFError`` when the stream ends or fails early, and then keeps no file.
        """

        def copy(file: IO[bytes]) -> int:
            remaining = length
            while remaining:
                try:
                    chunk = stream.read(min(_CHUNK_BYTES, remaining))
                except (ClientDisconnected, OSError) as exc:
                    # werkzeug raises ClientDisconnected for a body shorter than its
                    # Content-Length, and the socket raises OSError when it times out.
                    raise EOFError(f"body cut after {length - remaining} bytes") from exc
                if not chunk:
                    raise EOFError(f"body ended after {length - remaining} of {length} bytes")
                file.write(chunk)
                remaining -= len(chunk)
            return length

        self._write(key, copy, content_type)
        with self._lock:
            self._deadlines[key] = time.time() + RETENTION_SECONDS

    def _write(self, key: str, copy: Callable[[IO[bytes]], int], content_type: str) -> int:
        path = self.path(key)
        try:
            self._write_type(path, content_type)
            return _replace(path, copy)
        except OSError as exc:
            raise StoreUnavailableError(f"write of {key} failed: {exc.strerror}") from exc

    @staticmethod
    def _write_type(path: Path, content_type: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The type goes first, so an object on disk never lacks its Content-Type.
        _replace(_type_path(path), lambda file: file.write(content_type.encode()))

    def head(self, key: str) -> TransferObject:
        path = self.path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = _linked_size(_linked_path(path), key)
        try:
            content_type: str | None = _type_path(path).read_text()
        except FileNotFoundError:
            content_type = None
        return TransferObject(key, size, content_type)

    def read(self, key: str) -> bytes:
        file, size, _ = self.open(key)
        try:
            with file:
                return file.read(size)
        except OSError as exc:
            raise StoreUnavailableError(f"read of {key} failed: {exc.strerror}") from exc

    def open(self, key: str) -> tuple[IO[bytes], int, str | None]:
        """Open the file of ``key``; return it, its size and its Content-Type.

        Raises ``NotFoundError`` when there is none.
        """
        path = self.path(key)
        try:
            content_type: str | None = _type_path(path).read_text()
        except FileNotFoundError:
            content_type = None
        try:
            file = path.open("rb")
        except FileNotFoundError:
            linked = _LinkedReader(_linked_path(path), key, self._reader_closed)
            with self._lock:
                self._readers[key] = self._readers.get(key, 0) + 1
            return io.BufferedReader(linked), linked.size, content_type
        return file, os.fstat(file.fileno()).st_size, content_type

    def _reader_closed(self, key: str) -> None:
        with self._lock:
            left = self._readers.pop(key) - 1
            if left:
                self._readers[key] = left

    def delete(self, key: str) -> None:
        path = self.path(key)
        path.unlink(missing_ok=True)
        # A reader opens each linked file only when it reaches it, so ``remove_expired`` skips
        # a linked body while a GET reads it.
        shutil.rmtree(_linked_path(path), ignore_errors=True)
        _type_path(path).unlink(missing_ok=True)
        with self._lock:
            self._deadlines.pop(key, None)
            self._presigned.discard(key)

    def presign_get(self, key: str, expires_in: int) -> str:
        return self._presign("GET", key, expires_in)

    def presign_put(self, key: str, expires_in: int) -> str:
        return self._presign("PUT", key, expires_in)

    def _presign(self, method: str, key: str, expires_in: int) -> str:
        if self.base_url is None:
            raise StoreUnavailableError("the local HTTP server that serves transfers is not up")
        self.path(key)
        expires = int(time.time()) + expires_in
        if method == "GET" and _RESPONSES_FOLDER in key:
            with self._lock:
                # The first URL replaces the retention of an unsigned response.
                known = self._deadlines.get(key, 0.0) if key in self._presigned else 0.0
                self._deadlines[key] = max(known, float(expires))
                self._presigned.add(key)
        self.remove_expired()
        query = urlencode({"expires": expires, "signature": self.signature(method, key, expires)})
        return f"{self.base_url}/{key}?{query}"

    def signature(self, method: str, key: str, expires: int) -> str:
        """Return the hex HMAC-SHA256 that allows ``method`` on ``key`` until ``expires``."""
        message = f"{method}\n{key}\n{expires}".encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    def verify(self, method: str, key: str, expires: str, signature: str) -> bool:
        """Tell whether ``signature`` allows ``method`` on ``key`` now; HEAD counts as GET."""
        if method == "HEAD":
            method = "GET"
        if not expires.isdigit() or int(expires) < time.time():
            return False
        expected = self.signature(method, key, int(expires))
        return hmac.compare_digest(expected, signature)

    def remove_expired(self) -> int:
        """Delete the objects whose lifetime has ended; return how many were deleted.

        A linked body that a GET is still reading is kept until a call after the GET ends.
        A started download then completes after its URL has expired, as it does from S3.
        """
        now = time.time()
        with self._lock:
            expired = [
                key
                for key, deadline in self._deadlines.items()
                if deadline < now and key not in self._readers
            ]
        for key in expired:
            self.delete(key)
        if expired:
            logger.debug("expired transfer objects deleted", extra={"objects": len(expired)})
        return len(expired)

    def sweep_every(self, seconds: float) -> None:
        """Run ``remove_expired`` every ``seconds`` on a thread of its own until ``close``."""
        threading.Thread(
            target=self._sweep, args=(seconds,), name="transfer-sweep", daemon=True
        ).start()

    def close(self) -> None:
        """End the sweeps of ``sweep_every``."""
        self._stopped.set()

    def _sweep(self, seconds: float) -> None:
        while not self._stopped.wait(seconds):
            try:
                self.remove_expired()
            except OSError as exc:
                logger.warning("expired transfer objects not removed", extra={"error": str(exc)})

    def path(self, key: str) -> Path:
        """Return the file of ``key``; raise ``ValueError`` for a key outside the transfers."""
        if not key.startswith(TRANSFER_PREFIX) or key.endswith((_TYPE_SUFFIX, _LINKED_SUFFIX)):
            raise ValueError(f"key {key!r} is not a transfer object's key")
        path = (self.root / key.removeprefix(TRANSFER_PREFIX)).resolve()
        if not path.is_relative_to(self.root) or path.name.startswith("."):
            raise ValueError(f"transfer key {key!r} leaves the transfers folder")
        return path


class TransferSite:
    """A WSGI app that serves ``/transfers/`` from ``store`` and other paths from ``fallback``."""

    def __init__(self, store: FolderTransferStore, fallback: WSGIApplication | None = None) -> None:
        self._store = store
        self._fallback = fallback

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = raw_request_path(environ)
        if not path.startswith(f"/{TRANSFER_PREFIX}"):
            if self._fallback is None:
                return _error(404, "not found")(environ, start_response)
            return self._fallback(environ, start_response)
        request = Request(environ)
        response = self._respond(request, path.removeprefix("/"))
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response(environ, start_response)

    def _respond(self, request: Request, key: str) -> Response:
        if request.method not in ("GET", "HEAD", "PUT"):
            return _error(405, f"method {request.method} is not allowed on transfer objects")
        expires = request.args.get("expires", "")
        signature = request.args.get("signature", "")
        try:
            self._store.path(key)
        except ValueError:
            return _error(403, "access denied: the URL is not a transfer object's URL")
        if not self._store.verify(request.method, key, expires, signature):
            # The query is not logged, because its signature grants access to the object.
            logger.info("transfer URL rejected", extra={"method": request.method})
            return _error(403, "access denied: the URL is invalid, expired or for another method")
        if request.method == "PUT":
            return self._put(request, key)
        try:
            file, size, content_type = self._store.open(key)
        except NotFoundError:
            return _error(404, "transfer object not found; it may have expired")
        # The server closes the wrapper, and with it the file, also when it sends nothing of
        # the body, so every reader of a linked body ends (``FolderTransferStore.open``).
        response = Response(
            FileWrapper(file, _CHUNK_BYTES) if request.method == "GET" else b"",
            content_type=content_type or "application/octet-stream",
        )
        if request.method == "HEAD":
            file.close()
        response.content_length = size
        return response

    def _put(self, request: Request, key: str) -> Response:
        length = request.content_length
        if length is None:
            return _error(411, "PUT of a transfer object requires Content-Length")
        if length > MAX_PUT_BYTES:
            return _error(413, f"body of {length} bytes exceeds the maximum of {MAX_PUT_BYTES}")
        content_type = request.headers.get("Content-Type") or "binary/octet-stream"
        try:
            self._store.write_stream(key, request.stream, length, content_type)
        except EOFError as exc:
            logger.warning("transfer upload incomplete", extra={"error": str(exc)})
            response = _error(400, f"request body incomplete: {exc}; send the whole body again")
            response.headers["Connection"] = "close"
            return response
        except StoreUnavailableError as exc:
            logger.error("transfer object not written", extra={"error": str(exc)})
            return _error(503, "transfer object not written; try again")
        return Response(b"", status=200)


class _LinkedReader(io.RawIOBase):
    """The content of a linked body, read segment by segment from the files of its folder."""

    def __init__(
        self, folder: Path, key: str, on_close: Callable[[str], None] | None = None
    ) -> None:
        try:
            layout = json.loads((folder / _LAYOUT_NAME).read_bytes())
        except FileNotFoundError as exc:
            raise NotFoundError(f"transfer object {key} not found") from exc
        self._folder = folder
        self._segments = [(str(name), int(offset), int(length)) for name, offset, length in layout]
        self.size = sum(length for _, _, length in self._segments)
        self._index = 0
        self._done = 0  # bytes of the current segment already read
        self._descriptors: dict[str, int] = {}
        self._key = key
        self._on_close: Callable[[str], None] | None = on_close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self._index < len(self._segments):
            name, offset, length = self._segments[self._index]
            if self._done == length:
                self._next_segment(name)
                continue
            count = min(length - self._done, len(view) - filled)
            read = os.preadv(
                self._descriptor(name), [view[filled : filled + count]], offset + self._done
            )
            if read == 0:
                raise OSError(f"file {name} of a linked body ended before its length in the layout")
            filled += read
            self._done += read
        return filled

    def _descriptor(self, name: str) -> int:
        if name not in self._descriptors:
            self._descriptors[name] = os.open(self._folder / name, os.O_RDONLY)
        return self._descriptors[name]

    def _next_segment(self, name: str) -> None:
        self._index += 1
        self._done = 0
        # Each linked file is one segment, so it is not read again. The bytes file is.
        descriptor = None if name == _BYTES_NAME else self._descriptors.pop(name, None)
        if descriptor is not None:
            os.close(descriptor)

    def close(self) -> None:
        for descriptor in self._descriptors.values():
            os.close(descriptor)
        self._descriptors.clear()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close(self._key)
        super().close()


def _write_body(path: Path, chunks: Iterable[bytes | Path]) -> int:
    """Write ``chunks`` to ``path``, or to the folder of a linked body if one is a ``Path``.

    Returns the size of the body. Either form is built under a temporary name and renamed
    into place, and replaces the other form of an earlier body of the same key.
    """
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=_INCOMING_PREFIX))
    linked = _linked_path(path)
    try:
        segments = _write_segments(folder, chunks)
        if all(name == _BYTES_NAME for name, _, _ in segments):
            os.replace(folder / _BYTES_NAME, path)
            shutil.rmtree(linked, ignore_errors=True)
            folder.rmdir()
        else:
            (folder / _LAYOUT_NAME).write_text(json.dumps(segments))
            shutil.rmtree(linked, ignore_errors=True)
            path.unlink(missing_ok=True)
            os.rename(folder, linked)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return sum(length for _, _, length in segments)


def _write_segments(folder: Path, chunks: Iterable[bytes | Path]) -> list[tuple[str, int, int]]:
    """Write the bytes of ``chunks`` to one file of ``folder`` and link each file beside it.

    Returns the layout: the name, offset and length of each segment of the body, in order.
    Consecutive bytes form one segment.
    """
    segments: list[tuple[str, int, int]] = []
    written = 0
    # Owner only, as ``mkstemp`` creates files: a body without linked files is this file.
    descriptor = os.open(folder / _BYTES_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as data:
        for chunk in chunks:
            if isinstance(chunk, Path):
                name = str(len(segments))
                segments.append((name, 0, _link_or_copy(chunk, folder / name)))
                continue
            length = data.write(chunk)
            if segments and segments[-1][0] == _BYTES_NAME:
                _, start, previous = segments[-1]
                segments[-1] = (_BYTES_NAME, start, previous + length)
            elif length:
                segments.append((_BYTES_NAME, written, length))
            written += length
    return segments


def _link_or_copy(source: Path, target: Path) -> int:
    """Hard-link ``source`` as ``target``, or copy it where that fails; return its size."""
    missing = f"file {source.name} of the body not found; it may have been deleted"
    try:
        os.link(source, target)
    except FileNotFoundError as exc:
        raise NotFoundError(missing) from exc
    except OSError:
        # EXDEV (another file system), EPERM or EMLINK: the file system cannot link it.
        try:
            shutil.copyfile(source, target)
        except FileNotFoundError as exc:
            raise NotFoundError(missing) from exc
    return os.stat(target).st_size


def _linked_size(folder: Path, key: str) -> int:
    reader = _LinkedReader(folder, key)
    reader.close()
    return reader.size


def _linked_path(path: Path) -> Path:
    return path.with_name(path.name + _LINKED_SUFFIX)


def _type_path(path: Path) -> Path:
    return path.with_name(path.name + _TYPE_SUFFIX)


def _replace(path: Path, write: Callable[[IO[bytes]], int]) -> int:
    """Write a temporary file with ``write``, flush it and rename it to ``path``."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=_INCOMING_PREFIX)
    try:
        with os.fdopen(fd, "wb") as file:
            result = write(file)
            file.flush()
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return result


def _error(status: int, message: str) -> Response:
    return Response(json.dumps({"error": message}), status=status, content_type="application/json")
