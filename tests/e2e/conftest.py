"""The local stack as a user runs it: ``cirrus dev`` in a child process on free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dicomweb_client.api import DICOMwebClient

READY_LINE = "Cirrus local stack running"
STOPPED_LINE = "Cirrus local stack stopped"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    dicom_port: int
    http_port: int
    data_dir: Path
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicomweb"

    def wait_for_line(self, text: str, timeout: float = 60.0, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                if text in line:
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        output = "\n".join(self.lines[-40:])
        raise AssertionError(f"{text!r} not seen in the stack's output:\n{output}")

    def stop(self) -> int:
        """Send SIGINT as Ctrl-C does and return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)

    def wait_for_output_end(self, timeout: float = 30.0) -> None:
        """Wait until every process writing to the stack's output, children too, has closed it.

        Until then, ``lines`` may still lack the last lines of a process that has exited.
        """
        assert self.reader is not None
        self.reader.join(timeout)
        if self.reader.is_alive():
            raise AssertionError(f"the stack's output was still open {timeout} s after it exited")


def wait_for_instances(client: DICOMwebClient, study: str, count: int) -> list[dict[str, Any]]:
    """Return the study's instances once QIDO finds ``count`` or more, or after 30 s."""
    deadline = time.monotonic() + 30
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = client.search_for_instances(study_instance_uid=study)
        if len(found) >= count:
            break
        time.sleep(0.1)
    return found


def start_stack(
    data_dir: Path, *options: str, environment: Mapping[str, str] | None = None
) -> RunningStack:
    """Start ``cirrus dev`` with ``options`` added to its own; return once it is running.

    ``environment`` replaces this process's environment, such as to set PYTHONPATH to
    another checkout.
    """
    dicom_port, http_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "cirrus.cli", "dev",
        "--dicom-port", str(dicom_port), "--http-port", str(http_port),
        "--data-dir", str(data_dir), *options,
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**(os.environ if environment is None else environment), "PYTHONUNBUFFERED": "1"},
    )
    stack = RunningStack(process, dicom_port, http_port, data_dir)

    def collect() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            stack.lines.append(line.rstrip("\n"))

    stack.reader = threading.Thread(target=collect, daemon=True)
    stack.reader.start()
    try:
        stack.wait_for_line(READY_LINE, timeout=120)
    except AssertionError:
        process.kill()
        raise
    return stack


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    stack = start_stack(tmp_path_factory.mktemp("cirrus-data"))
    yield stack
    if stack.process.poll() is None:
        stack.process.kill()
        stack.process.wait()
