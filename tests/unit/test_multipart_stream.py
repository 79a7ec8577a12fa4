"""The chunked multipart/related encoder against the parser and the one-piece encoder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cirrus.dicomweb.multipart import (
    Part,
    build_multipart_related,
    iter_multipart_related,
    parse_multipart_related,
)

PARTS = [
    Part(b"\x00first\r\n", content_type="application/dicom"),
    Part(b"", content_type="application/octet-stream", content_location="/a"),
    Part(b"third" * 1000, headers={"x-extra": "1"}),
]


def test_chunks_equal_built_body() -> None:
    chunks, content_type = iter_multipart_related(iter(PARTS), "application/dicom", "b0")

    body = b"".join(chunks)

    assert (body, content_type) == build_multipart_related(PARTS, "application/dicom", "b0")


def test_chunks_parse_back() -> None:
    chunks, content_type = iter_multipart_related(PARTS, "application/dicom")

    parsed = parse_multipart_related(content_type, b"".join(chunks))

    assert [part.body for part in parsed.parts] == [part.body for part in PARTS]
    assert parsed.type == "application/dicom"


def test_parts_taken_lazily() -> None:
    taken: list[int] = []

    def parts() -> Iterator[Part]:
        for number, part in enumerate(PARTS):
            taken.append(number)
            yield part

    chunks, _ = iter_multipart_related(parts(), "application/dicom")

    assert taken == []
    next(chunks)
    assert taken == [0]


def test_boundary_in_part_raises() -> None:
    chunks, _ = iter_multipart_related([Part(b"a\r\n--b0\r\nz")], "application/dicom", "b0")

    with pytest.raises(ValueError, match="occurs in part 1"):
        b"".join(chunks)


def test_no_parts_raises() -> None:
    chunks, _ = iter_multipart_related([], "application/dicom")

    with pytest.raises(ValueError, match="at least one part"):
        b"".join(chunks)
