"""The health check and the graceful stop: 503 while draining, in-flight associations finish."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from cirrus.config import Settings
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import SUCCESS
from cirrus.local.moto_process import LOOPBACK
from cirrus.services import Services
from cirrus.storage.objects import ObjectStore
from tests.gateway.gateways import OPEN_CONFIG
from tests.gateway.scu import associate, fresh_ct, send_file_as_is, wait_until
from tests.gateway.test_store_failures import GatedStore

CT_CONTEXT = [(CTImageStorage, ExplicitVRLittleEndian)]
STARTUP_TIMEOUT_SECONDS = 30


def health_gateway(settings: Settings, store: ObjectStore | None = None) -> Gateway:
    services = Services(settings)
    if store is not None:
        services.store = store
    return Gateway.start(services, OPEN_CONFIG, LOOPBACK, 0, health_address=(LOOPBACK, 0))


def get(port: int, path: str = "/health", method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://{LOOPBACK}:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def refuses_connections(port: int) -> bool:
    """Return whether nothing listens on ``port`` (a reset means a listener that is closing)."""
    try:
        socket.create_connection((LOOPBACK, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False
    return False


def start_store(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, path: Path, results: list[Dataset]
) -> threading.Thread:
    """Send ``path`` in a thread; return once the gateway has spooled it."""

    def send() -> None:
        with associate(gateway.port, CT_CONTEXT) as assoc:
            results.append(send_file_as_is(monkeypatch, assoc, path))

    sender = threading.Thread(target=send)
    sender.start()
    assert wait_until(lambda: gateway.ae.spool.used_bytes > 0)
    return sender


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def test_health_serving(gateway_settings: Settings) -> None:
    with health_gateway(gateway_settings) as gateway:
        assert gateway.health_port is not None
        status, body = get(gateway.health_port)
        head_status, head_body = get(gateway.health_port, method="HEAD")
        missing, _ = get(gateway.health_port, "/other")
        health_port = gateway.health_port

    assert status == 200
    assert json.loads(body) == {"status": "serving", "associations": 0}
    assert head_status == 200
    assert head_body == b""
    assert missing == 404
    assert refuses_connections(health_port)


def test_drain_lets_slow_store_finish(
    gateway_settings: Settings,
    archive: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    path, key = fresh_ct(tmp_path)
    gated = GatedStore(gateway_settings)
    results: list[Dataset] = []
    gateway = health_gateway(gateway_settings, gated)
    assert gateway.health_port is not None

    sender = start_store(gateway, monkeypatch, path, results)
    stopper = threading.Thread(target=gateway.shutdown, kwargs={"grace_seconds": 20})
    started = time.monotonic()
    stopper.start()
    assert wait_until(lambda: gateway.draining)
    assert wait_until(lambda: refuses_connections(gateway.port))
    draining_status, draining_body = get(gateway.health_port)
    stopped_early = not stopper.is_alive()
    gated.release.set()
    sender.join(timeout=10)
    stopper.join(timeout=25)
    elapsed = time.monotonic() - started

    assert draining_status == 503
    assert json.loads(draining_body) == {"status": "draining", "associations": 1}
    assert not stopped_early
    assert [status.Status for status in results] == [SUCCESS]
    assert archive.size(key) > 0
    assert not stopper.is_alive()
    assert elapsed < 10, "shutdown waited for the whole grace period"


def test_drain_deadline_aborts_association(
    gateway_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path, _ = fresh_ct(tmp_path)
    gated = GatedStore(gateway_settings)
    results: list[Dataset] = []
    gateway = health_gateway(gateway_settings, gated)

    sender = start_store(gateway, monkeypatch, path, results)
    started = time.monotonic()
    try:
        gateway.shutdown(grace_seconds=0.5)
        elapsed = time.monotonic() - started
    finally:
        gated.release.set()
        sender.join(timeout=10)

    # pynetdicom returns an empty status when the association ends before the response.
    assert [("Status" in status) for status in results] == [False]
    assert 0.5 <= elapsed < 10


# Runs the container entry point on the given ports with an open AE configuration.
MAIN_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from gateway.main import main
sys.exit(main())
"""


def test_sigterm_drains_container(gateway_settings: Settings, tmp_path: Path) -> None:
    config = tmp_path / "ae.json"
    config.write_text(json.dumps({"open": True}))
    dicom_port, health_port = free_port(), free_port()
    environment = {
        **os.environ,
        **gateway_settings.to_env(),
        "CIRRUS_DICOM_HOST": LOOPBACK,
        "CIRRUS_DICOM_PORT": str(dicom_port),
        "CIRRUS_HEALTH_PORT": str(health_port),
        "CIRRUS_AE_CONFIG": str(config),
        "CIRRUS_METRICS_INTERVAL": "3600",
        # One process, whose health check reports the association that this test holds open.
        "CIRRUS_GATEWAY_WORKERS": "1",
    }
    root = Path(__file__).resolve().parents[2]
    # A file, not a pipe: a full pipe would block the gateway's logging and with it the stop.
    log = tmp_path / "gateway.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", MAIN_SCRIPT, str(root)],
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        assert wait_until(lambda: not refuses_connections(health_port), STARTUP_TIMEOUT_SECONDS)
        serving, _ = get(health_port)
        with associate(dicom_port, CT_CONTEXT):
            process.send_signal(signal.SIGTERM)
            closed = wait_until(lambda: refuses_connections(dicom_port), STARTUP_TIMEOUT_SECONDS)
            assert closed, log.read_text()
            draining, _ = get(health_port)
            still_running = process.poll() is None
        process.wait(timeout=STARTUP_TIMEOUT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    emf = [line for line in lines if "_aws" in line]

    assert serving == 200
    assert draining == 503
    assert still_running, "the gateway stopped before the open association ended"
    assert process.returncode == 0, output
    assert any(line.get("message") == "SIGTERM received, stopping the gateway" for line in lines)
    (totals,) = emf
    assert totals["AssociationsAccepted"] == [1.0]
    assert totals["Deployment"] == gateway_settings.deployment
