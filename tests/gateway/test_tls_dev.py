"""``cirrus dev`` with its TLS options: mutual TLS on a second port, in a child process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cirrus.config import DEFAULT_AE_TITLE
from cirrus.local.moto_process import LOOPBACK
from tests.gateway.scu import run_dcmtk
from tests.gateway.tls_certificates import issue, make_authority

READY_LINE = "Cirrus local stack running"
START_TIMEOUT_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_output(process: subprocess.Popen[str], text: str) -> list[str]:
    """Read the stack's output until a line contains ``text``; return the lines read.

    A thread reads the output, so that a stack that prints nothing cannot block the wait
    beyond its deadline.
    """
    assert process.stdout is not None
    stdout = process.stdout
    lines: list[str] = []
    found = threading.Event()

    def collect() -> None:
        for line in stdout:
            lines.append(line.rstrip("\n"))
            if text in line:
                found.set()

    threading.Thread(target=collect, daemon=True).start()
    if not found.wait(START_TIMEOUT_SECONDS):
        output = "\n".join(lines[-40:])
        raise AssertionError(f"{text!r} not seen in the stack's output:\n{output}")
    return list(lines)


def test_dev_serves_mutual_tls(tmp_path: Path) -> None:
    authority = make_authority(tmp_path, "dev-ca")
    server = issue(authority, tmp_path, "dev-gateway", server=True)
    client = issue(authority, tmp_path, "dev-modality", server=False)
    tls_port = free_port()
    command = [
        sys.executable, "-m", "cirrus.cli", "dev",
        "--dicom-port", str(free_port()), "--http-port", str(free_port()),
        "--data-dir", str(tmp_path / "data"),
        "--tls-port", str(tls_port),
        "--tls-certificate", str(server.certificate), "--tls-key", str(server.private_key),
        "--tls-ca", str(authority.certificate), "--tls-require-client-certificate",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = wait_for_output(process, READY_LINE)
        assert any(f"listening for TLS on {LOOPBACK}:{tls_port}" in line for line in lines)

        with_certificate = run_dcmtk(
            "echoscu",
            *("+tls", str(client.private_key), str(client.certificate)),
            *("+cf", str(authority.certificate), "-aec", DEFAULT_AE_TITLE),
            *(LOOPBACK, str(tls_port)),
        )
        assert with_certificate.returncode == 0, with_certificate.stdout + with_certificate.stderr

        anonymous = run_dcmtk(
            "echoscu",
            *("+tla", "+cf", str(authority.certificate), "-aec", DEFAULT_AE_TITLE),
            *(LOOPBACK, str(tls_port)),
        )
        assert anonymous.returncode != 0
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tls-key", "gateway.key"], "give both --tls-certificate and --tls-key"),
        (["--tls-ca", "ca.pem"], "need TLS"),
    ],
)
def test_dev_rejects_partial_tls_options(tmp_path: Path, options: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cirrus.cli", "dev", "--data-dir", str(tmp_path), *options],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_dev_rejects_unusable_certificate(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    command = [
        sys.executable, "-m", "cirrus.cli", "dev", "--data-dir", str(tmp_path),
        "--dicom-port", "0", "--http-port", "0",
        "--tls-certificate", str(missing), "--tls-key", str(missing),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert f"TLS certificate {missing}" in output
    assert "Traceback" not in output
