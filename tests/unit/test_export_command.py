"""The de-identification flags of ``cirrus export`` and ``cirrus deidentify``."""

from __future__ import annotations

from pathlib import Path

import pytest

from cirrus.deid import DateHandling
from cirrus.operations.export_command import CommandError, DeidOptions, read_key


def test_key_file_stripped(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("  0123456789abcdef0123  \n")
    assert read_key(path) == b"0123456789abcdef0123"


def test_short_key_rejected(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("0123456789\n")
    with pytest.raises(CommandError, match="contains 10 bytes; use at least 16"):
        read_key(path)


def test_missing_key_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot be read"):
        read_key(tmp_path / "absent")


def test_date_flags_exclusive() -> None:
    with pytest.raises(CommandError, match="exclude each other"):
        DeidOptions(retain_dates=True, shift_dates=True).deidentifier()


def test_flags_select_options(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("k" * 32)
    flags = DeidOptions(retain_uids=True, shift_dates=True, key_file=path)
    deidentifier = flags.deidentifier()
    assert flags.given()
    assert deidentifier.options.retain_uids
    assert deidentifier.options.dates is DateHandling.SHIFT
    assert deidentifier.key == b"k" * 32
    assert not DeidOptions().given()
