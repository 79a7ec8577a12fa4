"""The flags of ``cirrus export`` and ``cirrus deidentify``, and their Ctrl-C handling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cirrus.cli
from cirrus.deid import DateHandling
from cirrus.entry import main
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


def _interrupt(*args: object) -> Callable[[], object]:
    raise KeyboardInterrupt


def test_interrupt_during_start_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["cirrus", "export", "1.2.3", "--to", "out"])
    with pytest.raises(SystemExit) as exit_info:
        main(load_app=_interrupt)
    assert exit_info.value.code == 130
    error = capsys.readouterr().err
    assert error == "cirrus export: interrupted\n"


def test_export_interrupted_before_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cirrus.cli, "_operations_target", _interrupt)
    result = CliRunner().invoke(cirrus.cli.app, ["export", "1.2.3", "--to", str(tmp_path / "out")])
    assert result.exit_code == 130
    assert "cirrus export: interrupted" in result.output
    assert "Aborted" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
