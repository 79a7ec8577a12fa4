"""multipart/related parsing and building, and the media type parsing they rely on."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from hypothesis import given
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from cirrus.dicomweb.media import parse_accept, parse_media_type
from cirrus.dicomweb.multipart import (
    Part,
    build_multipart_related,
    parse_multipart_related,
    split_multipart,
)
from cirrus.errors import InvalidRequestError

BOUNDARY = "b0undary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def body_of(*parts: bytes, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    """Encode raw parts (headers, blank line and content) by hand, as RFC 2046 shows."""
    encoded = preamble + b"".join(b"--" + BOUNDARY.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return encoded + b"--" + BOUNDARY.encode() + b"--" + epilogue


# Content-Type parameters


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/related; type="application/dicom"; boundary="b0undary"',
        "multipart/related; type=application/dicom; boundary=b0undary",
        'Multipart/Related;TYPE="application/dicom";Boundary=b0undary',
        'multipart/related ; type="application/dicom" ;\tboundary=b0undary ',
    ],
)
def test_content_type_quoted_or_not(content_type: str) -> None:
    parsed = parse_multipart_related(content_type, body_of(b"\r\nx"))
    assert parsed.boundary == BOUNDARY
    assert parsed.type == "application/dicom"
    assert [part.body for part in parsed.parts] == [b"x"]


def test_content_type_boundary_with_special_characters() -> None:
    boundary = "----=_Part_0 with space'()+_,-./:=?"
    content_type = f'multipart/related; type="application/dicom"; boundary="{boundary}"'
    body = f"--{boundary}\r\n\r\ncontent\r\n--{boundary}--".encode()
    parsed = parse_multipart_related(content_type, body)
    assert parsed.boundary == boundary
    assert parsed.parts[0].body == b"content"


def test_content_type_unquoted_boundary_with_equals() -> None:
    parsed = parse_multipart_related(
        "multipart/related; boundary=----=_Part_1; type=application/dicom",
        b"------=_Part_1\r\n\r\nx\r\n------=_Part_1--",
    )
    assert parsed.boundary == "----=_Part_1"
    assert parsed.type == "application/dicom"


def test_content_type_missing_boundary() -> None:
    with pytest.raises(InvalidRequestError, match="no boundary parameter"):
        parse_multipart_related('multipart/related; type="application/dicom"', b"")


def test_content_type_not_multipart() -> None:
    with pytest.raises(InvalidRequestError, match="expected multipart/related"):
        parse_multipart_related("application/dicom", b"")


def test_content_type_missing() -> None:
    with pytest.raises(InvalidRequestError, match="no Content-Type"):
        parse_multipart_related(None, b"")


def test_content_type_unterminated_quote() -> None:
    with pytest.raises(InvalidRequestError, match="unterminated quoted string"):
        parse_multipart_related('multipart/related; boundary="abc', b"")


def test_boundary_too_long() -> None:
    with pytest.raises(InvalidRequestError, match="1 to 70"):
        split_multipart(b"", "x" * 71)


# Splitting


def test_split_exact_part_bodies() -> None:
    first = b"\r\n\r\nstarts and ends with CRLF\r\n"
    second = b"--" + BOUNDARY.encode() + b" is not at the start of a line here"
    body = body_of(
        b"Content-Type: application/dicom\r\n\r\n" + first,
        b"Content-Type: application/dicom\r\n\r\n" + second,
    )
    parts = split_multipart(body, BOUNDARY)
    assert [part.body for part in parts] == [first, second]


def test_split_boundary_prefix_inside_content() -> None:
    # "\r\n--b0undaryX" starts with the delimiter but is not one: it stays content.
    content = b"before\r\n--" + BOUNDARY.encode() + b"X after"
    parts = split_multipart(body_of(b"\r\n" + content), BOUNDARY)
    assert [part.body for part in parts] == [content]


def test_split_preamble_and_epilogue_ignored() -> None:
    body = body_of(
        b"\r\none",
        b"\r\ntwo",
        preamble=b"This is the preamble.\r\n--b0undaryNOT\r\n",
        epilogue=b"\r\nThis is the epilogue.\r\n--b0undary\r\n\r\nnot a part\r\n",
    )
    parts = split_multipart(body, BOUNDARY)
    assert [part.body for part in parts] == [b"one", b"two"]


def test_split_first_delimiter_after_crlf() -> None:
    # dicomweb-client starts its bodies with CRLF: an empty preamble and the first delimiter.
    body = b"\r\n--" + BOUNDARY.encode() + b"\r\n\r\nx\r\n--" + BOUNDARY.encode() + b"--"
    assert [part.body for part in split_multipart(body, BOUNDARY)] == [b"x"]


def test_split_transport_padding() -> None:
    dash = b"--" + BOUNDARY.encode()
    body = dash + b" \t\r\n\r\none\r\n" + dash + b"  \r\n\r\ntwo\r\n" + dash + b"-- \r\n"
    assert [part.body for part in split_multipart(body, BOUNDARY)] == [b"one", b"two"]


def test_split_empty_parts() -> None:
    body = body_of(b"Content-Type: application/dicom\r\n\r\n", b"")
    parts = split_multipart(body, BOUNDARY)
    assert [part.body for part in parts] == [b"", b""]
    assert parts[0].content_type == "application/dicom"
    assert parts[1].content_type is None


def test_split_close_delimiter_only() -> None:
    assert split_multipart(b"--" + BOUNDARY.encode() + b"--", BOUNDARY) == []


def test_split_part_without_headers() -> None:
    (part,) = split_multipart(body_of(b"\r\nno headers"), BOUNDARY)
    assert part.body == b"no headers"
    assert part.headers == {}


def test_split_headers() -> None:
    raw = (
        b"content-type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n"
        b"CONTENT-LOCATION: http://127.0.0.1/a.dcm\r\n"
        b"X-Folded: first\r\n second\r\n"
        b"\r\nbody"
    )
    (part,) = split_multipart(body_of(raw), BOUNDARY)
    assert part.content_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    assert part.content_location == "http://127.0.0.1/a.dcm"
    assert part.headers["x-folded"] == "first second"
    assert part.body == b"body"


def test_split_malformed_header_line() -> None:
    with pytest.raises(InvalidRequestError, match="malformed header line"):
        split_multipart(body_of(b"no colon here\r\n\r\nbody"), BOUNDARY)


def test_split_part_without_blank_line() -> None:
    with pytest.raises(InvalidRequestError, match="no blank line"):
        split_multipart(body_of(b"Content-Type: application/dicom"), BOUNDARY)


def test_split_truncated_body() -> None:
    body = body_of(b"\r\none", b"\r\ntwo")
    with pytest.raises(InvalidRequestError, match="no closing delimiter"):
        split_multipart(body[: body.rindex(b"\r\n--")], BOUNDARY)


def test_split_without_any_delimiter() -> None:
    with pytest.raises(InvalidRequestError, match="no delimiter"):
        split_multipart(b"just bytes", BOUNDARY)


def test_split_bare_lf_is_not_a_delimiter() -> None:
    body = b"--b0undary\n\nx\n--b0undary--"
    with pytest.raises(InvalidRequestError, match="no delimiter"):
        split_multipart(body, BOUNDARY)


# Building and round trips


def test_build_layout() -> None:
    body, content_type = build_multipart_related(
        [Part(b"one", content_type="application/dicom", content_location="/a")],
        "application/dicom",
        boundary="xyz",
    )
    assert content_type == 'multipart/related; type="application/dicom"; boundary=xyz'
    assert body == (
        b"--xyz\r\nContent-Type: application/dicom\r\nContent-Location: /a\r\n\r\none\r\n--xyz--"
    )


def test_build_quotes_boundary_when_needed() -> None:
    _, content_type = build_multipart_related([Part(b"x")], "application/dicom", "a b")
    assert content_type == 'multipart/related; type="application/dicom"; boundary="a b"'
    assert parse_media_type(content_type).param("boundary") == "a b"


def test_build_rejects_boundary_in_content() -> None:
    with pytest.raises(ValueError, match="occurs in part 1"):
        build_multipart_related([Part(b"a\r\n--xyz\r\nb")], "application/dicom", "xyz")


def test_build_chooses_boundary_absent_from_content() -> None:
    body, content_type = build_multipart_related([Part(b"x")] * 3, "application/dicom")
    boundary = parse_media_type(content_type).param("boundary")
    assert boundary is not None
    assert body.count(b"--" + boundary.encode()) == 4


def test_build_needs_a_part() -> None:
    with pytest.raises(ValueError, match="at least one part"):
        build_multipart_related([], "application/dicom")


@given(
    st.lists(
        st.binary(max_size=300)
        | st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b"--", b"\r\n--", b"--\r\n"]),
        min_size=1,
        max_size=6,
    )
)
def test_round_trip_any_bytes(contents: list[bytes]) -> None:
    parts = [Part(content, content_type="application/octet-stream") for content in contents]
    body, content_type = build_multipart_related(parts, "application/octet-stream")
    parsed = parse_multipart_related(content_type, body)
    assert parsed.type == "application/octet-stream"
    assert [part.body for part in parsed.parts] == contents
    assert all(part.content_type == "application/octet-stream" for part in parsed.parts)


def test_round_trip_headers() -> None:
    part = Part(
        b"\x00\x01",
        content_type="application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90",
        content_location="http://127.0.0.1:8080/dicomweb/studies/1/series/2/instances/3",
        headers={"Content-ID": "<a@b>"},
    )
    body, content_type = build_multipart_related([part], "application/dicom")
    (parsed,) = parse_multipart_related(content_type, body).parts
    assert parsed.body == part.body
    assert parsed.content_type == part.content_type
    assert parsed.content_location == part.content_location
    assert parsed.headers["content-id"] == "<a@b>"


# Interoperability with dicomweb-client


TEST_FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm"]


def captured_store_request(datasets: list[pydicom.Dataset]) -> dict[str, Any]:
    """Return the Content-Type and body that dicomweb-client's store_instances sends."""
    client = DICOMwebClient(url="http://127.0.0.1:9/dicomweb")
    captured: dict[str, Any] = {}

    def capture(url: str, data: bytes, headers: dict[str, str]) -> requests.Response:
        captured.update(url=url, data=data, headers=headers)
        response = requests.Response()
        response.status_code = 200
        response._content = b""
        return response

    client._http_post = capture  # type: ignore[method-assign]
    client.store_instances(datasets)
    return captured


def test_dicomweb_client_store_body() -> None:
    datasets = [pydicom.dcmread(get_testdata_file(name)) for name in TEST_FILES]
    expected = []
    for ds in datasets:
        with BytesIO() as buffer:
            pydicom.dcmwrite(buffer, ds)
            expected.append(buffer.getvalue())
    captured = captured_store_request(datasets)
    parsed = parse_multipart_related(captured["headers"]["Content-Type"], captured["data"])
    assert parsed.type == "application/dicom"
    assert [part.content_type for part in parsed.parts] == ["application/dicom"] * 4
    assert [part.body for part in parsed.parts] == expected


def test_dicomweb_client_decodes_built_body() -> None:
    contents = [b"\r\n--first\r\n", b"", bytes(range(256)) * 4]
    parts = [Part(content, content_type="application/octet-stream") for content in contents]
    body, content_type = build_multipart_related(parts, "application/octet-stream")
    response = requests.Response()
    response.status_code = 200
    response.headers["Content-Type"] = content_type
    response._content = body
    client = DICOMwebClient(url="http://127.0.0.1:9/dicomweb")
    decoded = list(client._decode_multipart_message(response, stream=False))
    assert decoded == contents


# Accept


def test_accept_ranges_in_weight_order() -> None:
    ranges = parse_accept(
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90;'
        ' q=0.5, multipart/related; type="application/dicom, quoted comma"; q=0.9, */*; q=0'
    )
    assert [media.param("type") for media in ranges] == [
        "application/dicom, quoted comma",
        "application/dicom",
    ]
    assert ranges[1].param("transfer-syntax") == "1.2.840.10008.1.2.4.90"
    assert ranges[1].quality == 0.5


def test_accept_absent_is_anything() -> None:
    (media,) = parse_accept(None)
    assert media.essence == "*/*"
    assert media.matches("application/dicom+json")


def test_accept_invalid_weight() -> None:
    with pytest.raises(InvalidRequestError, match="q=2"):
        parse_accept("application/json; q=2")
