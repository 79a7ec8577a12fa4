"""The moto front's header parsing against the standard library's, field by field."""

from __future__ import annotations

import http.client
import io

import pytest

from cirrus.local.moto_front import _parse_fields

BLOCKS = [
    b"Host: 127.0.0.1:4566\r\nContent-Type: application/x-amz-json-1.0\r\n",
    b"host:no-space\r\nX-Amz-Target:  DynamoDB_20120810.GetItem \r\n",
    b"X-Dup: first\r\nx-dup: second\r\nContent-Length: 2\r\n",
    b"X-Tab:\tvalue\r\nX-Empty:\r\nX-Colon: a:b:c\r\n",
    b"X-Latin: caf\xe9\r\nX-Lf-Only: yes\n",
    b"X-Folded: first\r\n second\r\nHost: h\r\n",
    b"Bad Name: value\r\nHost: h\r\n",
    b": no name\r\nHost: h\r\n",
]


def _standard(block: bytes) -> http.client.HTTPMessage:
    return http.client.parse_headers(io.BytesIO(block + b"\r\n"))


@pytest.mark.parametrize("block", BLOCKS)
def test_fields_match_standard_parser(block: bytes) -> None:
    expected = _standard(block)
    lines = io.BytesIO(block).readlines()

    parsed = _parse_fields(lines, http.client.HTTPMessage)

    assert parsed.items() == expected.items()
    for name in ("host", "HOST", "X-Dup", "x-amz-target", "Missing", "X-Empty", "X-Folded"):
        assert parsed.get(name) == expected.get(name), name
        assert (name in parsed) == (name in expected), name
