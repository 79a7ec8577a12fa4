"""multipart/related bodies (RFC 2046 5.1, RFC 2387) as DICOMweb uses them (PS3.18 8.6, 8.7).

Bodies are split on their boundary with bytes operations. A part's body is exactly the bytes
between the blank line that ends its headers and the CRLF that precedes the next delimiter, so
Part 10 objects and bulk data pass through unchanged. Line breaks must be CRLF, as RFC 2046 and
PS3.18 require; the preamble and the epilogue are ignored.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cirrus.dicomweb.media import MediaType, format_media_type, parse_media_type
from cirrus.errors import InvalidRequestError

MULTIPART_RELATED: Final = "multipart/related"
CRLF: Final = b"\r\n"
# RFC 2046 5.1.1: a boundary has 1 to 70 characters.
MAX_BOUNDARY_LENGTH: Final = 70
_TRANSPORT_PADDING: Final = b" \t"


@dataclass(frozen=True)
class Part:
    """One body part: its content and header fields.

    ``headers`` maps lower-case field names to values. When a part is built, Content-Type and
    Content-Location come from their own fields and ``headers`` adds any others.
    """

    body: bytes
    content_type: str | None = None
    content_location: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FilePart:
    """A part whose body is the whole content of the file at ``path``.

    ``iter_multipart_files`` passes ``path`` on in place of the body, so that a consumer
    that can copy or link files writes the part without reading it into memory. The file
    must not change until the body has been written.
    """

    path: Path
    content_type: str | None = None
    content_location: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MultipartRelated:
    """A parsed multipart/related body with the parameters of its Content-Type."""

    boundary: str
    type: str | None
    parts: list[Part]


def multipart_media_type(content_type: str | None) -> MediaType:
    """Parse a Content-Type value that must be multipart/related.

    Raises ``InvalidRequestError`` when the value is malformed or names another media type.
    """
    if not content_type:
        raise InvalidRequestError(
            "request has no Content-Type; send multipart/related with a boundary parameter"
        )
    media = parse_media_type(content_type)
    if media.essence != MULTIPART_RELATED:
        raise InvalidRequestError(f"Content-Type is {media.essence}; expected {MULTIPART_RELATED}")
    return media


def parse_multipart_related(content_type: str | None, body: bytes) -> MultipartRelated:
    """Parse a multipart/related request body by the boundary of its Content-Type.

    Raises ``InvalidRequestError`` for a missing or invalid boundary and for a body without
    a closing delimiter.
    """
    media = multipart_media_type(content_type)
    boundary = media.param("boundary")
    if boundary is None:
        raise InvalidRequestError(
            f"Content-Type {content_type!r} has no boundary parameter; the sender must set it"
        )
    return MultipartRelated(boundary, media.param("type"), split_multipart(body, boundary))


def split_multipart(body: bytes, boundary: str) -> list[Part]:
    """Split ``body`` into its parts on ``boundary`` (RFC 2046 5.1.1).

    The first delimiter may start the body or follow a preamble and CRLF. Transport padding
    (spaces and tabs) after a delimiter is skipped.
    """
    dash_boundary = b"--" + _check_boundary(boundary)
    delimiter = CRLF + dash_boundary
    if body.startswith(dash_boundary) and _ends_delimiter(body, len(dash_boundary)):
        position: int | None = len(dash_boundary)
    else:
        position = _find_delimiter(body, delimiter, 0)
    if position is None:
        raise InvalidRequestError(
            f"multipart body has no delimiter --{boundary}; check the boundary parameter"
        )
    parts: list[Part] = []
    while not body.startswith(b"--", position):
        start = _end_of_delimiter_line(body, position)
        assert start is not None  # _find_delimiter returns only complete delimiter lines
        end = _find_delimiter(body, delimiter, start)
        if end is None:
            raise InvalidRequestError(
                f"multipart body has no closing delimiter --{boundary}--; the body may be truncated"
            )
        parts.append(_parse_part(body[start : end - len(delimiter)], len(parts) + 1))
        position = end
    return parts


def build_multipart_related(
    parts: Sequence[Part], root_type: str, boundary: str | None = None
) -> tuple[bytes, str]:
    """Encode ``parts`` as a multipart/related body and return it with its Content-Type.

    ``root_type`` is the ``type`` parameter (RFC 2387), such as ``application/dicom``. Without
    ``boundary``, a random one that occurs in no part is chosen. A given one must not occur.
    """
    if not parts:
        raise ValueError("a multipart body needs at least one part (RFC 2046 5.1.1)")
    if boundary is None:
        boundary = _new_boundary(parts)
    dash_boundary = b"--" + _check_boundary(boundary)
    for number, part in enumerate(parts, start=1):
        if CRLF + dash_boundary in part.body:
            raise ValueError(f"boundary {boundary!r} occurs in part {number}; choose another")
    chunks: list[bytes] = []
    for part in parts:
        chunks += [dash_boundary, CRLF, _header_block(part), CRLF, part.body, CRLF]
    chunks += [dash_boundary, b"--"]
    content_type = format_media_type(MULTIPART_RELATED, {"type": root_type, "boundary": boundary})
    return b"".join(chunks), content_type


def iter_multipart_related(
    parts: Iterable[Part], root_type: str, boundary: str | None = None
) -> tuple[Iterator[bytes], str]:
    """Encode ``parts`` as a multipart/related body chunk by chunk; return it and its Content-Type.

    Parts are taken from ``parts`` one at a time, so a caller that produces them lazily keeps
    one part in memory at a time. Without ``boundary``, a random UUID is used. Unlike
    ``build_multipart_related``, the parts cannot be checked before the body starts, so the
    iterator raises ``ValueError`` at a part that contains the boundary, and at the end if
    ``parts`` was empty.
    """
    boundary = uuid.uuid4().hex if boundary is None else boundary
    dash_boundary = b"--" + _check_boundary(boundary)

    def chunks() -> Iterator[bytes]:
        for chunk in _encode_parts(parts, dash_boundary):
            assert isinstance(chunk, bytes)  # only a FilePart gives a Path
            yield chunk

    content_type = format_media_type(MULTIPART_RELATED, {"type": root_type, "boundary": boundary})
    return chunks(), content_type


def iter_multipart_files(
    parts: Iterable[Part | FilePart], root_type: str
) -> tuple[Iterator[bytes | Path], str]:
    """Encode ``parts`` as ``iter_multipart_related`` does, with the file of each ``FilePart``.

    The iterator yields the ``Path`` of a ``FilePart`` where its body goes, and bytes for
    everything else. The boundary is a random UUID. The bodies of ``Part`` are checked for it,
    and those of ``FilePart`` are not read, so not checked.
    """
    # NOTE: uuid4 draws 122 bits from os.urandom after the files were written, so the
    # chance that the boundary occurs in n bytes of them is below n / 2**122.
    boundary = uuid.uuid4().hex
    dash_boundary = b"--" + _check_boundary(boundary)
    content_type = format_media_type(MULTIPART_RELATED, {"type": root_type, "boundary": boundary})
    return _encode_parts(parts, dash_boundary), content_type


def _encode_parts(parts: Iterable[Part | FilePart], dash_boundary: bytes) -> Iterator[bytes | Path]:
    count = 0
    for part in parts:
        count += 1
        yield dash_boundary + CRLF + _header_block(part) + CRLF
        if isinstance(part, FilePart):
            yield part.path
        else:
            if CRLF + dash_boundary in part.body:
                # NOTE: with a random 128-bit boundary this is not expected to happen.
                boundary = dash_boundary[2:].decode("ascii")
                raise ValueError(f"boundary {boundary!r} occurs in part {count}")
            yield part.body
        yield CRLF
    if count == 0:
        raise ValueError("a multipart body needs at least one part (RFC 2046 5.1.1)")
    yield dash_boundary + b"--"


def _check_boundary(boundary: str) -> bytes:
    if not 1 <= len(boundary) <= MAX_BOUNDARY_LENGTH:
        raise InvalidRequestError(
            f"multipart boundary has {len(boundary)} characters; RFC 2046 allows 1 to 70"
        )
    try:
        return boundary.encode("ascii")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"multipart boundary {boundary!r} is not ASCII; RFC 2046 allows ASCII only"
        ) from exc


def _find_delimiter(body: bytes, delimiter: bytes, start: int) -> int | None:
    """Return the offset just after the next delimiter at or after ``start``, or None.

    Only a delimiter followed by ``--`` or by padding and CRLF counts. RFC 2046 forbids the
    boundary inside parts, so any other occurrence is content from a non-conformant sender.
    """
    while True:
        index = body.find(delimiter, start)
        if index < 0:
            return None
        after = index + len(delimiter)
        if _ends_delimiter(body, after):
            return after
        start = index + 1


def _ends_delimiter(body: bytes, position: int) -> bool:
    return body.startswith(b"--", position) or _end_of_delimiter_line(body, position) is not None


def _end_of_delimiter_line(body: bytes, position: int) -> int | None:
    """Return the offset after the padding and CRLF that end a delimiter line, or None."""
    while position < len(body) and body[position] in _TRANSPORT_PADDING:
        position += 1
    if body.startswith(CRLF, position):
        return position + len(CRLF)
    return None


def _parse_part(raw: bytes, number: int) -> Part:
    if not raw:
        return Part(body=b"")
    if raw.startswith(CRLF):
        return Part(body=raw[len(CRLF) :])
    separator = raw.find(CRLF + CRLF)
    if separator < 0:
        raise InvalidRequestError(
            f"multipart part {number} has no blank line after its header fields"
        )
    headers = _parse_headers(raw[:separator], number)
    return Part(
        body=raw[separator + 2 * len(CRLF) :],
        content_type=headers.get("content-type"),
        content_location=headers.get("content-location"),
        headers=headers,
    )


def _parse_headers(block: bytes, number: int) -> dict[str, str]:
    """Parse header fields (RFC 5322 2.2), unfolding continuation lines."""
    headers: dict[str, str] = {}
    name: str | None = None
    for line in block.decode("latin-1").split("\r\n"):
        if line[:1] in (" ", "\t") and name is not None:
            headers[name] = f"{headers[name]} {line.strip()}"
            continue
        field_name, colon, value = line.partition(":")
        if not colon or not field_name.strip():
            raise InvalidRequestError(
                f"multipart part {number} has a malformed header line {line[:80]!r}"
            )
        name = field_name.strip().lower()
        headers[name] = value.strip()
    return headers


def _header_block(part: Part | FilePart) -> bytes:
    lines = []
    if part.content_type is not None:
        lines.append(f"Content-Type: {part.content_type}\r\n")
    if part.content_location is not None:
        lines.append(f"Content-Location: {part.content_location}\r\n")
    for name, value in part.headers.items():
        if name.lower() not in ("content-type", "content-location"):
            lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


def _new_boundary(parts: Sequence[Part]) -> str:
    while True:
        boundary = uuid.uuid4().hex
        delimiter = CRLF + b"--" + boundary.encode("ascii")
        if not any(delimiter in part.body for part in parts):
            return boundary
