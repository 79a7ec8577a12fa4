"""The gateway's receive path alone against dcmtk's storescp: C-STORE rate and CPU per instance.

Starts the gateway's server code (``cirrus.gateway.server.run_gateway``, as the container and
``cirrus dev`` run it) in ``--workers`` processes that share one port with SO_REUSEPORT, as
the container's worker processes do. In them the object store, the SOP Instance UID claim
and the audit table are stubs: the store reads each spooled file to its end and discards it,
every claim succeeds, and audit records are built but not written. Everything else runs:
the spool, the header parse, the checks, the per-study audit collection.

The peer is ``storescp --fork -B`` (one process per association, data sets written to disk
as received) under the loopback shim ``tests/peers/loopback_bind.c``. Both servers and every
storescu run with TCP_NODELAY=1. storescu sends the same synthetic CT instances
(``bench/cstore.py``) over 1 and over 4 associations, one storescu process per association,
each with a contiguous part of the files. The two servers take turns within each
repetition, so that they share the machine's load.

CPU per instance is the user and system time of the server processes and their children
(from /proc/PID/stat, ended children included through the parent's cutime and cstime),
divided by the instances sent. storescu's own CPU is reported separately.

    .venv/bin/python bench/gateway_alone.py --instances 200 --repeat 3

Everything listens on 127.0.0.1, and every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cstore import synthetic_series
from bench.results import Measurement
from cirrus.audit import AuditLog
from cirrus.config import ResourceNames, Settings
from cirrus.gateway.aeconfig import AEConfig
from cirrus.gateway.limits import ENV_MAX_ASSOCIATIONS, GatewayLimits
from cirrus.gateway.server import Gateway, run_gateway
from cirrus.index.claims import InstanceClaims
from cirrus.local.moto_process import LOOPBACK
from cirrus.services import Services
from cirrus.storage.keys import InstanceKey
from cirrus.storage.objects import ObjectStore, StoredObject, read_chunks
from tests.peers.orthanc import build_shim

AE_TITLE: Final = "CIRRUS"
PEER_AE_TITLE: Final = "STORESCP"
PEER: Final = "dcmtk storescp --fork -B"
ENV: Final = {**os.environ, "TCP_NODELAY": "1"}
ASSOCIATION_COUNTS: Final = (1, 4)
STARTUP_TIMEOUT_SECONDS: Final = 60.0
STOP_TIMEOUT_SECONDS: Final = 30.0
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
# How long ``idle_cpu`` reads the CPU time of a gateway whose associations send nothing.
IDLE_SECONDS: Final = 10.0
STUB_NOTE: Final = (
    "gateway with its object store, SOP Instance UID claim and audit table stubbed "
    "(spool, header parse, checks and audit collection run)"
)


class DiscardingStore(ObjectStore):
    """An object store that reads every file written to it and keeps nothing."""

    def __init__(self) -> None:
        super().__init__(client=None, bucket="discarded", kms_key_id="")  # type: ignore[arg-type]

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> StoredObject:
        size = sum(len(chunk) for chunk in read_chunks(path))
        return StoredObject(key=key, size=size, etag="discarded")


class GrantingClaims(InstanceClaims):
    """SOP Instance UID claims that all succeed, as for instances never stored before."""

    def __init__(self) -> None:
        super().__init__(model=None)  # type: ignore[arg-type]

    def claim(self, key: InstanceKey) -> bool:
        return True

    def release(self, key: InstanceKey) -> None:
        pass


@dataclass
class StubServices(Services):
    """The gateway's adapters with the archive's writes stubbed; no AWS endpoint is used."""

    @cached_property
    def store(self) -> ObjectStore:
        return DiscardingStore()

    @cached_property
    def claims(self) -> InstanceClaims:
        return GrantingClaims()

    @cached_property
    def audit(self) -> AuditLog:
        # Without a table model, AuditLog.record writes nothing.
        return AuditLog(None, self.settings.deployment)


def serve(port: int) -> None:
    """Run one gateway process on ``port`` until SIGTERM; print "ready" once it listens."""
    settings = Settings.for_names(ResourceNames("gateway-alone"))
    config = AEConfig(ae_title=AE_TITLE, open=True, default_site="bench")

    def announce(gateway: Gateway) -> None:
        print("ready", flush=True)

    run_gateway(
        settings,
        config,
        LOOPBACK,
        port,
        limits=GatewayLimits.from_env(os.environ),
        services=StubServices(settings),
        reuse_port=True,
        on_ready=announce,
        grace_seconds=1.0,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue  # the thread ended since the listing
    return found


def _ticks(pid: int) -> int:
    """Return utime + stime + cutime + cstime of ``pid``, in clock ticks (0 if it ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The command name, in brackets, may contain spaces; the fields after it are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(value) for value in fields[11:15])


def cpu_seconds(pids: Sequence[int]) -> float:
    """Return the CPU time of ``pids`` and of all their descendants, ended ones included."""
    total = 0
    pending = list(pids)
    while pending:
        pid = pending.pop()
        total += _ticks(pid)
        pending.extend(_children(pid))
    return total / CLOCK_TICKS


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Server:
    """A started server: its processes, its port and what must run before each send."""

    name: str
    processes: list[subprocess.Popen[bytes]]
    port: int
    called_ae: str
    reset: Callable[[], None]

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]


def _wait_for_line(process: subprocess.Popen[bytes], expected: bytes) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"process {process.pid} exited with {process.wait()} before ready")
        if line.strip() == expected:
            return
    raise RuntimeError(f"process {process.pid} did not start in {STARTUP_TIMEOUT_SECONDS} s")


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"storescp exited with {process.returncode} before listening")
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"storescp did not listen on port {port}")


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def gateway_server(workers: int, environ: Mapping[str, str] = ENV) -> Iterator[Server]:
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", str(port)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(workers):
            process = subprocess.Popen(command, env=environ, stdout=subprocess.PIPE)
            processes.append(process)
            _wait_for_line(process, b"ready")
        yield Server("gateway", processes, port, AE_TITLE, lambda: None)
    finally:
        _stop(processes)


@contextmanager
def storescp_server(work: Path) -> Iterator[Server]:
    port = free_port()
    output = work / "storescp-out"
    output.mkdir()
    shim = build_shim(work)

    def empty_output() -> None:
        shutil.rmtree(output)
        output.mkdir()

    command = ["storescp", "--fork", "-B", "-aet", PEER_AE_TITLE, "-od", str(output), str(port)]
    process = subprocess.Popen(
        command,
        env={**ENV, "LD_PRELOAD": str(shim)},
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process)
        yield Server("storescp", [process], port, PEER_AE_TITLE, empty_output)
    finally:
        _stop([process])


@dataclass(frozen=True)
class Run:
    rate: float
    server_cpu_ms: float
    client_cpu_ms: float


def send(server: Server, files: Sequence[Path], associations: int) -> Run:
    """Send ``files`` over ``associations`` storescu processes; return rate and CPU."""
    server.reset()
    size = -(-len(files) // associations)
    parts = [files[start : start + size] for start in range(0, len(files), size)]
    server_before = cpu_seconds(server.pids)
    client_before = client_cpu_seconds()
    started = time.perf_counter()
    senders = [
        subprocess.Popen(
            ["storescu", "-aec", server.called_ae, LOOPBACK, str(server.port), *map(str, part)],
            env=ENV,
        )
        for part in parts
    ]
    failed = [sender.args for sender in senders if sender.wait() != 0]
    elapsed = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"storescu to {server.name} failed: {failed[0][:6]}")
    server_cpu = cpu_seconds(server.pids) - server_before
    client_cpu = client_cpu_seconds() - client_before
    count = len(files)
    return Run(count / elapsed, 1000 * server_cpu / count, 1000 * client_cpu / count)


def _median(runs: Sequence[Run], value: Callable[[Run], float]) -> float:
    return statistics.median(value(run) for run in runs)


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def gateway_alone(instances: int, repeat: int) -> list[Measurement]:
    """Measure the stubbed gateway and storescp on 1 and 4 associations, ``repeat`` times.

    The gateway runs one process per CPU, the container's default.
    """
    return measure(instances, repeat, os.cpu_count() or 1)


def measure(instances: int, repeat: int, worker_count: int) -> list[Measurement]:
    """Measure as ``gateway_alone`` does, with ``worker_count`` gateway processes."""
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        series = work / "series"
        series.mkdir()
        _, files = synthetic_series(series, instances, "GATEWAYALONE")
        load_before = _load()
        with gateway_server(worker_count) as gateway, storescp_server(work) as storescp:
            for associations in ASSOCIATION_COUNTS:
                runs: dict[str, list[Run]] = {"gateway": [], "storescp": []}
                for _ in range(repeat):
                    for server in (gateway, storescp):
                        runs[server.name].append(send(server, files, associations))
                measurements.extend(
                    _measurements(runs, associations, instances, worker_count, load_before)
                )
    return measurements


def _measurements(
    runs: dict[str, list[Run]], associations: int, instances: int, workers: int, load: str
) -> list[Measurement]:
    ours, theirs = runs["gateway"], runs["storescp"]
    plural = "s" if associations > 1 else ""
    clients = (
        f"storescu CPU ms/instance {_median(ours, lambda run: run.client_cpu_ms):.2f} "
        f"(to the gateway) and {_median(theirs, lambda run: run.client_cpu_ms):.2f} "
        "(to storescp)"
    )
    note = (
        f"{STUB_NOTE}; {workers} gateway processes; {instances} CT instances of 525 KB, "
        f"{len(ours)} repetitions; load average {load} at the start; {clients}"
    )
    return [
        Measurement(
            workload=f"C-STORE, gateway alone, {associations} association{plural}",
            unit="inst/s",
            cirrus=_median(ours, lambda run: run.rate),
            peer=PEER,
            peer_value=_median(theirs, lambda run: run.rate),
            higher_is_better=True,
            note=note,
        ),
        Measurement(
            workload=f"gateway CPU per instance, {associations} association{plural}",
            unit="CPU ms/instance",
            cirrus=_median(ours, lambda run: run.server_cpu_ms),
            peer=PEER,
            peer_value=_median(theirs, lambda run: run.server_cpu_ms),
            higher_is_better=False,
            note=note,
        ),
    ]


def _print(measurements: Sequence[Measurement]) -> None:
    for measurement in measurements:
        ratio = measurement.ratio
        ratio_text = f"{ratio:.2f}" if ratio is not None else "unknown"
        print(
            f"{measurement.workload}: gateway {measurement.cirrus:.2f}, "
            f"storescp {measurement.peer_value:.2f} {measurement.unit}, ratio {ratio_text}"
        )
    if measurements:
        print(measurements[0].note)


def idle_cpu(associations: int, seconds: float) -> float:
    """Return the CPU ms per second that one gateway process spends on idle associations.

    Opens ``associations`` associations to a gateway process (with pynetdicom, from this
    process), sends nothing for ``seconds`` and reads the gateway's CPU time meanwhile.
    """
    ae = AE(ae_title="IDLESCU")
    ae.add_requested_context(Verification)
    environ = {**ENV, ENV_MAX_ASSOCIATIONS: str(associations + 1)}
    with gateway_server(1, environ) as gateway:
        opened = [
            ae.associate(LOOPBACK, gateway.port, ae_title=AE_TITLE) for _ in range(associations)
        ]
        try:
            if not all(assoc.is_established for assoc in opened):
                raise RuntimeError("the gateway did not accept every idle association")
            before = cpu_seconds(gateway.pids)
            time.sleep(seconds)
            used = cpu_seconds(gateway.pids) - before
        finally:
            for assoc in opened:
                assoc.release()
    return 1000 * used / seconds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=400, help="instances per repetition")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each workload")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="gateway processes sharing the port; default the number of CPUs",
    )
    parser.add_argument(
        "--idle",
        type=int,
        default=None,
        metavar="ASSOCIATIONS",
        help="measure instead the CPU ms per second of a gateway with this many idle associations",
    )
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args: Any = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve)
        return
    if args.idle is not None:
        print(f"load average {_load()}")
        for count in (0, args.idle):
            used = idle_cpu(count, IDLE_SECONDS)
            print(f"gateway process with {count} idle associations: {used:.1f} CPU ms/s")
        return
    workers = args.workers if args.workers is not None else os.cpu_count() or 1
    _print(measure(args.instances, args.repeat, workers))


if __name__ == "__main__":
    main()
