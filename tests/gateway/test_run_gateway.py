"""``run_gateway`` as the container runs it: a process that serves until SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from cirrus.config import DEFAULT_AE_TITLE, Settings
from cirrus.gateway.status import SUCCESS
from cirrus.local.moto_process import LOOPBACK
from cirrus.storage.objects import ObjectStore
from tests.gateway.scu import associate, fresh_ct, run_dcmtk, send_file_as_is

STARTUP_TIMEOUT_SECONDS = 30

# Runs the gateway with settings from the environment and logs to standard error.
GATEWAY_SCRIPT = """
import logging, sys
from cirrus.config import Settings
from cirrus.gateway.aeconfig import AEConfig
from cirrus.gateway.server import run_gateway
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
settings = Settings.from_env()
config = AEConfig(open=True, default_site=settings.default_site)
run_gateway(settings, config, sys.argv[1], int(sys.argv[2]))
print("run_gateway returned", file=sys.stderr, flush=True)
"""


class GatewayProcess:
    def __init__(self, settings: Settings) -> None:
        with socket.socket() as probe:
            probe.bind((LOOPBACK, 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, "-c", GATEWAY_SCRIPT, LOOPBACK, str(self.port)],
            env={**os.environ, **settings.to_env()},
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []

    def wait_for_log(self, text: str) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            if text in line:
                return
        raise AssertionError(f"the gateway exited without logging {text!r}: {self.log}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        _, rest = self.process.communicate(timeout=STARTUP_TIMEOUT_SECONDS)
        self.log.extend(rest.splitlines())
        return self.process.returncode


@pytest.fixture
def gateway_process(gateway_settings: Settings) -> Iterator[GatewayProcess]:
    started = GatewayProcess(gateway_settings)
    try:
        started.wait_for_log("listening")
        yield started
    finally:
        if started.process.poll() is None:
            started.process.kill()
            started.process.wait()


def test_sigterm_stops_gateway(gateway_process: GatewayProcess) -> None:
    echo = run_dcmtk("echoscu", "-aec", DEFAULT_AE_TITLE, LOOPBACK, str(gateway_process.port))

    returncode = gateway_process.stop()

    assert echo.returncode == 0, echo.stderr
    assert returncode == 0, gateway_process.log
    assert any("SIGTERM received" in line for line in gateway_process.log)
    assert any("run_gateway returned" in line for line in gateway_process.log)


def test_sigterm_lets_open_association_finish(
    gateway_process: GatewayProcess,
    gateway_settings: Settings,
    archive: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    path, key = fresh_ct(tmp_path, site=gateway_settings.default_site)

    with associate(gateway_process.port, [(CTImageStorage, ExplicitVRLittleEndian)]) as assoc:
        gateway_process.process.send_signal(signal.SIGTERM)
        gateway_process.wait_for_log("SIGTERM received")
        status = send_file_as_is(monkeypatch, assoc, path)

    assert gateway_process.process.wait(timeout=STARTUP_TIMEOUT_SECONDS) == 0
    assert status.Status == SUCCESS
    assert archive.size(key) > 0
