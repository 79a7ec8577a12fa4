"""The web viewer's files in the local stack, served beside DICOMweb on the same port.

``ViewerSite`` is a WSGI app that serves the files of the viewer's build folder (Vite's
``viewer/dist``) and a generated ``/config.json``, as the S3 bucket and CloudFront serve them
on AWS. The files contain no patient data, so they are served without authentication and
without audit records, even when DICOMweb is closed.

- Only files inside the folder are served. A path with a NUL, a backslash, an empty, ``.`` or
  ``..`` segment (percent-encoded or not) or a segment starting with ``.`` gets 400, and a
  file whose real path leaves the folder through a symbolic link gets 404.
- Vite names the files under ``/assets/`` by a hash of their content, so browsers may keep
  them for a year. ``index.html``, ``config.json`` and every other file are revalidated on
  each use (``no-cache``) with their ETag.
- A missing file under ``/assets/`` gets 404. Any other missing path gets ``index.html``,
  because the viewer routes in the browser.
- Every response has the security headers of the CloudFront distribution, with the
  Content-Security-Policy of ``cirrus.viewer_headers``. The local stack passes no connect
  sources, so connect-src is this origin, which also serves the staged responses of large
  retrieves (``cirrus.local.transfers``). The local stack serves plain HTTP, so it
  sends no HSTS and no upgrade-insecure-requests.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response

from cirrus.local.http import raw_request_path
from cirrus.viewer_headers import content_security_policy

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

logger = logging.getLogger(__name__)

INDEX_FILE: Final = "index.html"
CONFIG_PATH: Final = "/config.json"
ASSETS_PREFIX: Final = "/assets/"
BUILD_COMMAND: Final = "cd viewer && npm ci && npm run build"

# Cache-Control of files that change with each build, and of Vite's content-hashed assets.
NO_CACHE: Final = "no-cache"
IMMUTABLE: Final = "public, max-age=31536000, immutable"

CONTENT_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".txt": "text/plain",
}
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"

ALLOWED_METHODS: Final = ("GET", "HEAD")


def viewer_config(dicomweb_path: str, *, closed: bool, region: str) -> dict[str, Any]:
    """Return the ``/config.json`` of the local stack (``ViewerConfig`` in the viewer).

    ``closed`` is true when DICOMweb accepts only SigV4-signed requests, and the viewer then
    asks for an access key id and its secret.
    """
    auth: dict[str, str] = {"mode": "keys", "region": region} if closed else {"mode": "none"}
    return {"dicomweb": dicomweb_path, "auth": auth}


def built_viewer(folder: Path) -> bool:
    """Return whether ``folder`` contains a built viewer: an ``index.html`` file."""
    return (folder / INDEX_FILE).is_file()


class InvalidPathError(ValueError):
    """A request path that cannot name a file of the viewer folder."""


class ViewerSite:
    """A WSGI app of the viewer's files in ``folder`` and its generated ``/config.json``.

    With ``folder`` None, or a folder without ``index.html``, a page with the command that
    builds the viewer replaces ``index.html``.
    """

    def __init__(
        self,
        folder: Path | None,
        config: dict[str, Any],
        connect_sources: Sequence[str] = (),
    ) -> None:
        self.folder = folder.resolve() if folder is not None else None
        self._config = json.dumps(config, separators=(",", ":")).encode()
        self._config_etag = hashlib.sha256(self._config).hexdigest()[:32]
        self._headers = {
            "Content-Security-Policy": content_security_policy(connect_sources),
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "X-XSS-Protection": "0",
        }

    @property
    def built(self) -> bool:
        return self.folder is not None and built_viewer(self.folder)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        response = self._respond(request, raw_request_path(environ))
        response.headers.update(self._headers)
        return response(environ, start_response)

    def _respond(self, request: Request, raw_path: str) -> Response:
        if request.method not in ALLOWED_METHODS:
            response = _text_response(405, f"{request.method} is not allowed on the viewer")
            response.headers["Allow"] = ", ".join(ALLOWED_METHODS)
            return response
        if raw_path == CONFIG_PATH:
            return self._config_response(request)
        try:
            path = self._lookup(raw_path)
        except InvalidPathError as exc:
            return _text_response(400, str(exc))
        if path is not None:
            return self._file_response(request, path, raw_path.startswith(ASSETS_PREFIX))
        if raw_path.startswith(ASSETS_PREFIX):
            return _text_response(404, "no such file in the viewer's assets")
        return self._index_response(request)

    def _lookup(self, raw_path: str) -> Path | None:
        """Return the file that ``raw_path`` names in the folder, or None when there is none.

        Raises ``InvalidPathError`` for a path that could name something outside the folder.
        """
        if self.folder is None:
            return None
        try:
            path = unquote(raw_path, errors="strict")
        except UnicodeDecodeError as exc:
            raise InvalidPathError("invalid path: not UTF-8 once percent-decoded") from exc
        if "\x00" in path or "\\" in path:
            raise InvalidPathError("invalid path: it contains a NUL or a backslash")
        segments = path.removeprefix("/").split("/")
        if segments == [""]:
            segments = [INDEX_FILE]
        # A path that ends with "/" names a folder, which is no file of the viewer.
        folder_path = len(segments) > 1 and segments[-1] == ""
        if folder_path:
            segments.pop()
        for segment in segments:
            if not segment or segment.startswith("."):
                raise InvalidPathError(
                    "invalid path: it has an empty segment or one that starts with '.'"
                )
        if folder_path:
            return None
        candidate = self.folder.joinpath(*segments)
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            # Missing, unreadable, or a loop of symbolic links.
            return None
        if not resolved.is_relative_to(self.folder):
            # The path is not logged, because a typed URL could carry patient data.
            logger.warning("viewer file rejected: a symbolic link leads out of the viewer folder")
            return None
        return resolved if resolved.is_file() else None

    def _file_response(self, request: Request, path: Path, asset: bool) -> Response:
        content_type = CONTENT_TYPES.get(path.suffix.lower(), DEFAULT_CONTENT_TYPE)
        response = send_file(path, request.environ, mimetype=content_type, conditional=True)
        # send_file sets Cache-Control and Expires of its own, a Content-Disposition that
        # names the file, and a Date that the server sends again.
        for name in ("Expires", "Content-Disposition", "Date"):
            response.headers.pop(name, None)
        response.headers["Cache-Control"] = IMMUTABLE if asset else NO_CACHE
        return response

    def _index_response(self, request: Request) -> Response:
        if self.folder is not None and self.built:
            return self._file_response(request, self.folder / INDEX_FILE, asset=False)
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            "<title>Cirrus viewer not built</title></head><body>"
            "<h1>The Cirrus viewer is not built</h1>"
            f"<p>Build it with <code>{BUILD_COMMAND}</code> in the repository, or start the "
            "stack with <code>scripts/dev</code>, which builds it. DICOMweb is at "
            '<a href="/dicomweb/studies">/dicomweb</a>.</p></body></html>'
        )
        response = Response(page, status=404, mimetype="text/html")
        response.headers["Cache-Control"] = NO_CACHE
        return response

    def _config_response(self, request: Request) -> Response:
        response = Response(self._config, mimetype="application/json")
        response.set_etag(self._config_etag)
        response.headers["Cache-Control"] = NO_CACHE
        return response.make_conditional(request)


def _text_response(status: int, message: str) -> Response:
    response = Response(message + "\n", status=status, mimetype="text/plain")
    response.headers["Cache-Control"] = NO_CACHE
    return response
