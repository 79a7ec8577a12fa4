"""The chunked multipart/related encoder against the parser and the one-piece encoder."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cirrus.dicomweb import multipart
from cirrus.dicomweb.multipart import (
    FilePart,
    Part,
    build_multipart_related,
    iter_multipart_files,
    iter_multipart_related,
    multipart_media_type,
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


def test_file_parts_passed_as_paths(tmp_path: Path) -> None:
    content = b"\x00stored\r\n" * 100
    path = tmp_path / "stored.dcm"
    path.write_bytes(content)
    parts = [PARTS[0], FilePart(path, content_type="application/dicom"), PARTS[2]]

    chunks, content_type = iter_multipart_files(parts, "application/dicom")
    chunks = list(chunks)

    assert chunks.count(path) == 1
    body = b"".join(chunk.read_bytes() if isinstance(chunk, Path) else chunk for chunk in chunks)
    boundary = multipart_media_type(content_type).param("boundary")
    assert boundary is not None
    expected_parts = [PARTS[0], Part(content, content_type="application/dicom"), PARTS[2]]
    expected = build_multipart_related(expected_parts, "application/dicom", boundary)
    assert (body, content_type) == expected


def test_file_parts_boundary_in_part_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = uuid.UUID(int=7)
    monkeypatch.setattr(multipart.uuid, "uuid4", lambda: fixed)
    part = Part(b"a\r\n--" + fixed.hex.encode() + b"\r\nz")

    chunks, content_type = iter_multipart_files([PARTS[0], part], "application/dicom")

    assert multipart_media_type(content_type).param("boundary") == fixed.hex
    with pytest.raises(ValueError, match="occurs in part 2"):
        list(chunks)
