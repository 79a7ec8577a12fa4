"""The first bytes of a spool file, kept in memory, as ranges of the file.

``cirrus.gateway.spool.read_spool_file_header`` reads the ranges within the kept bytes from
memory and the others from the file, so every range must equal the file's bytes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cirrus.gateway.spool import HEAD_BYTES, _FileReader

FILE_BYTES = bytes(range(256)) * ((HEAD_BYTES + 5000) // 256)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, HEAD_BYTES),
        (0, 10),
        (100, 200),
        (0, HEAD_BYTES + 1),
        (HEAD_BYTES - 4, HEAD_BYTES + 4),
        (HEAD_BYTES, None),
        (10, None),
        (len(FILE_BYTES) - 4, None),
        (0, 2 * len(FILE_BYTES)),
    ],
)
def test_head_ranges_match_file(tmp_path: Path, start: int, end: int | None) -> None:
    path = tmp_path / "spooled.dcm"
    path.write_bytes(FILE_BYTES)
    from_file = _FileReader(path)
    with_head = _FileReader(path, bytearray(FILE_BYTES[:HEAD_BYTES]), len(FILE_BYTES))

    expected = from_file.get_range("key", start, end)
    actual = with_head.get_range("key", start, end)

    assert actual == expected
    assert type(actual[0]) is bytes


def test_whole_small_file_read_from_head(tmp_path: Path) -> None:
    path = tmp_path / "spooled.dcm"
    path.write_bytes(b"DICM" * 10)
    reader = _FileReader(path, bytearray(b"DICM" * 10), 40)
    path.unlink()

    data, size = reader.get_range("key", 0, HEAD_BYTES)

    assert data == b"DICM" * 10
    assert size == 40
