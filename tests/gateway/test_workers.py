"""Gateway worker processes that share one port (``cirrus.gateway.workers``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from cirrus.config import Settings
from cirrus.gateway.status import SUCCESS
from cirrus.gateway.workers import (
    MAX_WORKERS,
    WORKERS_ENV,
    WorkerPool,
    WorkerSpec,
    available_cores,
    read_worker_count,
)
from cirrus.local.moto_process import LOOPBACK
from cirrus.storage.objects import ObjectStore
from tests.gateway.gateways import OPEN_CONFIG
from tests.gateway.scu import associate, fresh_ct, send_file_as_is, storescu, wait_until
from tests.gateway.test_health import refuses_connections

# Connections that the test opens at most to reach both workers. Linux picks the listening
# socket by a hash of the connection, so each one reaches a given worker with probability 1/2.
MAX_CONNECTIONS = 32
TCP_ESTABLISHED = "01"
CT_CONTEXT = [(CTImageStorage, ExplicitVRLittleEndian)]
STOP_TIMEOUT_SECONDS = 60


@pytest.fixture(scope="module")
def pool(gateway_settings: Settings) -> Iterator[WorkerPool]:
    spec = WorkerSpec(gateway_settings, OPEN_CONFIG, LOOPBACK, 0, options={"grace_seconds": 2.0})
    running = WorkerPool.start(spec, 2)
    yield running
    running.shutdown()


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed since the listing
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def serving_pid(pids: list[int], port: int, client_port: int) -> int | None:
    """Return which of ``pids`` owns the server end of the connection from ``client_port``."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        remote_port = int(fields[2].rsplit(":", 1)[1], 16)
        if local_port == port and remote_port == client_port and fields[3] == TCP_ESTABLISHED:
            inode = fields[9]
    if inode is None:
        return None
    return next((pid for pid in pids if inode in socket_inodes(pid)), None)


def test_read_worker_count_values() -> None:
    assert read_worker_count({}) == available_cores()
    assert read_worker_count({WORKERS_ENV: ""}) == available_cores()
    assert read_worker_count({WORKERS_ENV: "3"}) == 3
    for invalid in ("0", "-1", "two", str(MAX_WORKERS + 1), "²"):
        with pytest.raises(ValueError, match=WORKERS_ENV):
            read_worker_count({WORKERS_ENV: invalid})


def test_pool_listens_twice_on_one_port(pool: WorkerPool) -> None:
    listening = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == pool.port and fields[3] == "0A":
            listening += 1
    assert listening == 2
    assert len(pool.pids()) == 2


def test_associations_reach_both_workers(pool: WorkerPool) -> None:
    pids = pool.pids()
    seen: set[int] = set()
    with ExitStack() as open_associations:
        for _ in range(MAX_CONNECTIONS):
            assoc = open_associations.enter_context(
                associate(pool.port, [(CTImageStorage, ExplicitVRLittleEndian)])
            )
            client_port = assoc.dul.socket.socket.getsockname()[1]  # type: ignore[union-attr]
            pid = serving_pid(pids, pool.port, client_port)
            assert pid is not None, f"no worker holds the connection from port {client_port}"
            seen.add(pid)
            if seen == set(pids):
                break
    assert seen == set(pids)


def test_pool_stores_instances(
    pool: WorkerPool,
    archive: ObjectStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = []
    for _ in range(4):
        path, key = fresh_ct(tmp_path)
        keys.append(key)
        with associate(pool.port, [(CTImageStorage, ExplicitVRLittleEndian)]) as assoc:
            status = send_file_as_is(monkeypatch, assoc, path)
        assert status.Status == SUCCESS
    for key in keys:
        assert archive.get(key)


def test_storescu_through_pool(pool: WorkerPool, archive: ObjectStore, tmp_path: Path) -> None:
    path, key = fresh_ct(tmp_path)
    storescu(pool.port, path)
    assert archive.get(key)


def test_pool_reserves_port_in_use(gateway_settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        spec = WorkerSpec(gateway_settings, OPEN_CONFIG, LOOPBACK, taken.getsockname()[1])
        with pytest.raises(OSError):
            WorkerPool.start(spec, 2)


def test_pool_binds_over_time_wait(gateway_settings: Settings) -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection((LOOPBACK, port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first, so its end stays in TIME-WAIT
        client.close()
    spec = WorkerSpec(gateway_settings, OPEN_CONFIG, LOOPBACK, port, options={"grace_seconds": 0.0})
    started = WorkerPool.start(spec, 2)
    try:
        assert started.port == port
    finally:
        started.shutdown()


def test_pool_shutdown_ends_workers(gateway_settings: Settings) -> None:
    spec = WorkerSpec(gateway_settings, OPEN_CONFIG, LOOPBACK, 0, options={"grace_seconds": 0.0})
    started = WorkerPool.start(spec, 2)
    pids = started.pids()
    started.shutdown()
    assert started.exited() == [1, 2]
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


RUN_WORKERS_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
from cirrus.config import Settings
from cirrus.gateway.aeconfig import AEConfig
from cirrus.gateway.workers import WorkerSpec, run_workers
settings = Settings.from_env()
config = AEConfig(open=True, default_site=settings.default_site)
options = {"grace_seconds": float(sys.argv[2])}
spec = WorkerSpec(settings, config, "127.0.0.1", int(sys.argv[1]), options=options)
print("exit", run_workers(spec, 2), flush=True)
"""


def start_run_workers(
    settings: Settings, grace_seconds: float = 1.0
) -> tuple[subprocess.Popen[str], int]:
    """Start ``run_workers`` with 2 workers and return once both listen.

    ``grace_seconds`` is the time that each worker gives its associations after SIGTERM.
    """
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = int(probe.getsockname()[1])
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_WORKERS_SCRIPT, str(port), str(grace_seconds)],
        env={**os.environ, **settings.to_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output = []
    for line in process.stdout:
        output.append(line)
        if "2 gateway workers listening" in line:
            return process, port
    process.wait()
    raise AssertionError(f"run_workers exited before both workers listened: {output}")


def worker_pids(parent: int) -> list[int]:
    """Return the spawned workers among the children of ``parent``, not the resource tracker."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    if not children.exists():
        return []
    pids = []
    for pid in children.read_text().split():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # ended since the listing
        if b"spawn_main" in command:
            pids.append(int(pid))
    return pids


def test_run_workers_stops_on_sigterm(gateway_settings: Settings, tmp_path: Path) -> None:
    process, port = start_run_workers(gateway_settings)
    try:
        path, _ = fresh_ct(tmp_path)
        storescu(port, path)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "exit 0" in output


def associate_with_each_worker(
    stack: ExitStack, port: int, workers: list[int]
) -> dict[int, Association]:
    """Open associations until each of ``workers`` serves one; return them by worker PID.

    Associations that reach a worker which already serves one are released at once.
    """
    associations: dict[int, Association] = {}
    for _ in range(MAX_CONNECTIONS):
        with ExitStack() as attempt:
            assoc = attempt.enter_context(associate(port, CT_CONTEXT))
            client_port = assoc.dul.socket.socket.getsockname()[1]  # type: ignore[union-attr]
            pid = serving_pid(workers, port, client_port)
            assert pid is not None, f"no worker holds the connection from port {client_port}"
            if pid not in associations:
                # The association stays idle until the workers stop listening, which on a busy
                # machine can take longer than the 10 s network timeout of ``associate``.
                assoc.network_timeout = STOP_TIMEOUT_SECONDS
                associations[pid] = assoc
                stack.push(attempt.pop_all())
        if set(associations) == set(workers):
            break
    return associations


def test_run_workers_drains_open_associations(
    gateway_settings: Settings,
    archive: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # A grace period longer than the test waits, so that the workers stop only once the open
    # associations end, and a worker that aborts them at SIGTERM fails the test.
    process, port = start_run_workers(gateway_settings, grace_seconds=STOP_TIMEOUT_SECONDS)
    stored: list[tuple[Dataset, str]] = []
    try:
        workers = worker_pids(process.pid)
        assert len(workers) == 2
        with ExitStack() as stack:
            associations = associate_with_each_worker(stack, port, workers)
            assert set(associations) == set(workers), "the associations did not reach both workers"

            process.send_signal(signal.SIGTERM)
            refused = wait_until(lambda: refuses_connections(port), STOP_TIMEOUT_SECONDS)
            assert refused, "the workers still accepted connections after SIGTERM"
            assert process.poll() is None, "run_workers ended before the open associations did"
            for assoc in associations.values():
                path, key = fresh_ct(tmp_path, site=gateway_settings.default_site)
                if assoc.is_established:
                    status = send_file_as_is(monkeypatch, assoc, path)
                else:
                    # Aborted at SIGTERM: an empty status, as pynetdicom returns for an
                    # association that ends before the response.
                    status = Dataset()
                stored.append((status, key))
        output, _ = process.communicate(timeout=STOP_TIMEOUT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert len(stored) == 2
    for status, key in stored:
        assert "Status" in status, "the association ended before the C-STORE response"
        assert status.Status == SUCCESS
        assert archive.size(key) > 0
    assert process.returncode == 0, output
    assert "SIGTERM received" in output
    assert "exit 0" in output


def test_run_workers_exits_when_worker_dies(gateway_settings: Settings) -> None:
    process, _ = start_run_workers(gateway_settings)
    try:
        assert len(worker_pids(process.pid)) == 2
        os.kill(worker_pids(process.pid)[0], signal.SIGKILL)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "exit 1" in output


def test_workers_stop_when_parent_killed(gateway_settings: Settings) -> None:
    process, port = start_run_workers(gateway_settings)
    try:
        workers = worker_pids(process.pid)
        assert len(workers) == 2
        process.kill()
        process.wait()
        assert wait_until(lambda: not any(_running(pid) for pid in workers), timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not _accepts(port)


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False
