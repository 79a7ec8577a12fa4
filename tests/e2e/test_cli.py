"""``cirrus dev`` refuses bad options and busy ports with one clear line, before starting."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import start_stack
from tests.gateway.test_workers import worker_pids


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


def _ignore_sigint() -> None:
    # As a shell starts a background job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_start_stops(tmp_path: Path, signum: int) -> None:
    command = [
        sys.executable, "-m", "cirrus.cli", "dev", "--dicom-port", "0", "--http-port", "0",
        "--data-dir", str(tmp_path / "data"),
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_ignore_sigint,
    )
    assert process.stdout is not None
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            # moto runs and the start goes on with the index and the gateway.
            if "object store and index ready" in line:
                process.send_signal(signum)
                break
        # A stack that went on starting would keep the pipe open: wait for the exit first.
        code = process.wait(timeout=60)
        output = "".join(lines) + process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert code == 130, output
    assert "start interrupted" in output
    assert "local stack running" not in output


def test_dead_gateway_worker_stops_the_stack(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "data", "--gateway-workers", "2")
    try:
        workers = worker_pids(stack.process.pid)
        assert len(workers) == 2, f"expected two gateway workers, found {workers}"
        os.kill(workers[0], signal.SIGKILL)
        code = stack.process.wait(timeout=60)
        stack.wait_for_output_end()
    finally:
        if stack.process.poll() is None:
            stack.process.kill()
            stack.process.wait()

    output = "\n".join(stack.lines)
    assert code == 1, output
    assert "exited, stopping the local stack" in output
    assert "Cirrus local stack stopped" in output
    assert "Traceback" not in output
