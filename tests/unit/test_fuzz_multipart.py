"""Fuzzing of the STOW-RS body parser: ``instance_parts`` and ``parse_multipart_related``.

Content-Type values and bodies are random text and bytes, and bodies assembled from delimiter
lines of the right or a wrong boundary, missing or repeated delimiters, header blocks with
and without the blank line, and bare LF line breaks. Each call must return parts or raise a
``CirrusError`` whose HTTP status is 4xx; any other exception fails the test.
"""

from __future__ import annotations

from http import HTTPStatus

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cirrus.dicomweb.errors import status_of
from cirrus.dicomweb.multipart import parse_multipart_related
from cirrus.dicomweb.stow import instance_parts
from cirrus.errors import CirrusError
from tests.fuzzing import fuzz_settings

# Boundaries of the usual forms, of the limit lengths, and with characters that need quotes.
boundaries = st.one_of(
    st.sampled_from(["b", "=_Part_1", "a" * 70, "a" * 71, "x y", "é", "--", '"', ""]),
    st.text(max_size=80),
    st.text(alphabet="abcdef0123456789-_'()+,./:=?", min_size=1, max_size=70),
    st.text(alphabet="abcdef0123456789", min_size=1, max_size=70),
)
header_lines = st.one_of(
    st.sampled_from(
        [
            b"Content-Type: application/dicom",
            b"Content-Type: application/octet-stream",
            b"Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
            b"Content-Type:",
            b"Content-Type: ",
            b"Content-Type: /",
            b"Content-Type: application/dicom; q",
            b'Content-Type: application/dicom; type="unterminated',
            b"Content-Location: x",
            b" folded continuation",
            b"no colon",
            b": no name",
        ]
    ),
    st.binary(max_size=60),
)
bodies = st.one_of(st.binary(max_size=200), st.sampled_from([b"", b"\r\n", b"--", b"\x00" * 4]))
line_breaks = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""])


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def content_types(draw: st.DrawFn, boundary: str) -> str:
    """Return a Content-Type with the given boundary and random other parameters."""
    essence = draw(
        st.sampled_from(
            ["multipart/related", "Multipart/Related", "multipart/mixed", "application/dicom"]
        )
        | st.text(max_size=20)
    )
    params = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["type", "boundary", "start", "q", "TYPE", ""]) | st.text())
        value = draw(
            st.sampled_from(["application/dicom", '"application/dicom"', "application/dicom+xml"])
            | st.text(max_size=20)
        )
        params.append(f"{name}={value}")
    if draw(st.booleans()):
        params.insert(draw(st.integers(0, len(params))), f"boundary={quoted(boundary)}")
    if draw(st.booleans()):
        params.insert(0, 'type="application/dicom"')
    separator = draw(st.sampled_from(["; ", ";", " ; ", ";;", ","]))
    return separator.join([essence, *params])


@st.composite
def multipart_bodies(draw: st.DrawFn, boundary: str) -> bytes:
    """Return a body of delimiter lines, header blocks and contents, often malformed."""
    encoded = boundary.encode("utf-8")
    other = draw(st.sampled_from([encoded, encoded, encoded + b"x", encoded[:-1], b""]))
    chunks = [draw(st.sampled_from([b"", b"preamble\r\n", b"\r\n"]))]
    for _ in range(draw(st.integers(0, 4))):
        chunks += [b"--", draw(st.sampled_from([encoded, other])), draw(line_breaks)]
        for line in draw(st.lists(header_lines, max_size=3)):
            chunks += [line, draw(line_breaks)]
        chunks += [draw(line_breaks), draw(bodies), draw(line_breaks)]
    closing = draw(st.sampled_from([b"--" + encoded + b"--", b"--" + encoded, b"", b"--"]))
    chunks += [closing, draw(st.sampled_from([b"", b"\r\n", b"epilogue"]))]
    return b"".join(chunks)


def check_rejection(exc: CirrusError) -> None:
    status = status_of(exc)
    assert HTTPStatus.BAD_REQUEST <= status < HTTPStatus.INTERNAL_SERVER_ERROR, (status, exc)


def check_instance_parts(content_type: str | None, body: bytes) -> None:
    try:
        parts = instance_parts(content_type, body)
    except CirrusError as exc:
        check_rejection(exc)
        return
    assert parts
    assert all(isinstance(part, bytes) for part in parts)
    assert sum(len(part) for part in parts) <= len(body)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str | None, bytes]:
    boundary = draw(boundaries)
    stow_type = f'multipart/related; type="application/dicom"; boundary={quoted(boundary)}'
    content_type = draw(
        st.one_of(
            st.none(),
            st.text(max_size=80),
            content_types(boundary),
            st.just(stow_type),
            st.just(stow_type),
        )
    )
    body = draw(
        st.one_of(st.binary(max_size=300), multipart_bodies(boundary), multipart_bodies(boundary))
    )
    return content_type, body


@fuzz_settings(500)
@given(request=requests())
@example(request=('multipart/related; type="application/dicom"; boundary=b', b"--b--"))
@example(request=('multipart/related; type="application/dicom"; boundary=b', b"--b\r\n\r\n--b--"))
def test_instance_parts_or_4xx(request: tuple[str | None, bytes]) -> None:
    check_instance_parts(*request)


@fuzz_settings(300)
@given(request=requests())
def test_multipart_related_parts_or_4xx(request: tuple[str | None, bytes]) -> None:
    content_type, body = request
    try:
        parsed = parse_multipart_related(content_type, body)
    except CirrusError as exc:
        check_rejection(exc)
        return
    assert sum(len(part.body) for part in parsed.parts) <= len(body)


def test_well_formed_body_yields_parts() -> None:
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\nDICM\r\n--b--"
    parts = instance_parts('multipart/related; type="application/dicom"; boundary=b', body)
    assert parts == [b"DICM"]


def test_lf_only_body_rejected() -> None:
    body = b"--b\nContent-Type: application/dicom\n\nDICM\n--b--"
    with pytest.raises(CirrusError) as raised:
        instance_parts('multipart/related; type="application/dicom"; boundary=b', body)
    assert status_of(raised.value) == HTTPStatus.BAD_REQUEST
