"""``cirrus dev`` refuses bad options and busy ports with one clear line, before starting."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import start_stack


def _dev(*options: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cirrus.cli", "dev", *options],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},  # no line wrapping inside the error box
        check=False,
    )


def test_busy_port_named(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _dev("--dicom-port", str(port), "--http-port", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert f"DICOM port 127.0.0.1:{port} cannot be bound" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_ae_title_rejected(tmp_path: Path) -> None:
    result = _dev("--ae-title", "A" * 17, cwd=tmp_path)
    assert result.returncode == 2
    assert "AE title" in result.stderr


def test_port_out_of_range_rejected(tmp_path: Path) -> None:
    result = _dev("--dicom-port", "99999", cwd=tmp_path)
    assert result.returncode == 2
    assert "--dicom-port" in result.stderr
    assert "65535" in result.stderr


def test_data_folder_in_use_rejected(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_stack(data_dir)
    try:
        result = _dev(
            "--dicom-port", "0", "--http-port", "0", "--data-dir", str(data_dir), cwd=tmp_path
        )
        assert first.process.poll() is None
    finally:
        assert first.stop() == 0
    assert result.returncode == 1
    assert f"is in use by another cirrus dev (process {first.process.pid})" in result.stderr
    assert "Traceback" not in result.stderr
    # The lock ends with the stack that held it, so the folder can be used again.
    second = start_stack(data_dir)
    assert second.stop() == 0
