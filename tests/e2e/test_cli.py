"""``cirrus dev`` refuses bad options and busy ports with one clear line, before starting."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


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
