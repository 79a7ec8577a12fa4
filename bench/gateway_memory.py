"""Peak memory of the gateway's processes while they store large instances, and their speed.

Starts moto and the gateway's container entry point (``python -m gateway.main``) on 127.0.0.1,
sends instances with storescu and reads resident set sizes from /proc: VmRSS when idle and
VmHWM (the peak so far) after each phase. The phases, in order:

1. small: ``--small`` synthetic CT instances of 512 KiB over one association;
2. large: one instance of ``--large-mb`` MiB;
3. parallel: ``--parallel`` instances of ``--parallel-mb`` MiB, one association each, at once.

The phases run twice: in the default configuration, with one worker process per CPU
(``cirrus.gateway.workers``), and with ``CIRRUS_GATEWAY_WORKERS=1``, where the started process
serves the associations itself. With workers, the started process is a supervisor that serves
nothing, so the "one serving process" rows give the maximum over the workers. The "all
processes" rows add up the supervisor, the workers and multiprocessing's resource tracker. A
sum of peaks is an upper bound of the peak of the sum, because the processes can reach their
peaks at different times, and it counts shared library pages once per process.

    .venv/bin/python bench/gateway_memory.py
    .venv/bin/python bench/gateway_memory.py --source /path/to/other/checkout

``--source`` runs the gateway of another checkout of this repository (for example an older
commit, exported with ``git archive``), so that two versions can be compared on one machine.
A checkout without worker processes serves in the started process in both configurations.
Every process it starts is stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cstore import synthetic_series

from cirrus.config import ResourceNames, Settings
from cirrus.local.moto_process import LOOPBACK, start_moto, use_local_credentials
from cirrus.local.resources import create_resources
from tests.gateway.test_large import write_large_instance

ENV = {**os.environ, "TCP_NODELAY": "1"}
MIB = 1024**2
STARTUP_TIMEOUT_SECONDS = 60
WORKERS_ENV = "CIRRUS_GATEWAY_WORKERS"

# Column name and the value of CIRRUS_GATEWAY_WORKERS of each configuration (None: unset).
CONFIGURATIONS: dict[str, str | None] = {"default": None, f"{WORKERS_ENV}=1": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def memory_kib(pid: int, field: str) -> int:
    """Return the ``field`` line (VmRSS, VmHWM) of /proc/PID/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def children(pid: int) -> list[int]:
    """Return the child processes of ``pid``, started by any of its threads."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue  # the thread ended since the listing
    return found


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and all its descendants."""
    tree = [pid]
    for child in children(pid):
        tree.extend(process_tree(child))
    return tree


def worker_pids(pid: int) -> list[int]:
    """Return the children of ``pid`` that multiprocessing spawned to run a gateway worker.

    The resource tracker, another child, runs ``resource_tracker.main`` instead.
    """
    workers = []
    for child in children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue  # ended since the listing
        if b"spawn_main" in command:
            workers.append(child)
    return workers


class GatewayMemory:
    """The /proc readings of one started gateway: its serving processes and all processes."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        # Workers are started together before any of them listens, so once the port accepts
        # connections every worker exists. A gateway without workers serves in ``pid``.
        self.serving = worker_pids(pid) or [pid]

    def peak_serving_mib(self) -> float:
        return max(memory_kib(pid, "VmHWM") for pid in self.serving) / 1024

    def peak_sum_mib(self) -> float:
        return sum(memory_kib(pid, "VmHWM") for pid in process_tree(self.pid)) / 1024

    def record_peaks(self, results: dict[str, float], phase: str) -> None:
        results[f"peak of one serving process after {phase}, MiB"] = self.peak_serving_mib()
        results[f"sum of peaks of all processes after {phase}, MiB"] = self.peak_sum_mib()


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with {process.returncode} before listening")
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the gateway did not listen on port {port}")


def wait_for_log(log: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    """Wait until the gateway's standard output, written to ``log``, contains ``text``."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while text not in log.read_text():
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with {process.returncode}: {log.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway did not log {text!r}: {log.read_text()}")
        time.sleep(0.2)


def storescu(port: int, paths: list[Path]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["storescu", "-to", "120", "-td", "120", "-aec", "CIRRUS", LOOPBACK, str(port),
         *map(str, paths)],
        env=ENV,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def run_senders(senders: list[subprocess.Popen[bytes]]) -> None:
    codes = [sender.wait() for sender in senders]
    if any(codes):
        raise RuntimeError(f"storescu failed with exit codes {codes}")


def gateway_environment(
    settings: Settings, source: Path, work: Path, port: int, workers: str | None
) -> dict[str, str]:
    config = work / "ae.json"
    config.write_text(json.dumps({"open": True}))
    environment = {
        **os.environ,
        "TCP_NODELAY": "1",
        **settings.to_env(),
        "PYTHONPATH": f"{source / 'layers/shared/python'}:{source}",
        "CIRRUS_DICOM_HOST": LOOPBACK,
        "CIRRUS_DICOM_PORT": str(port),
        "CIRRUS_HEALTH_PORT": str(free_port()),
        "CIRRUS_AE_CONFIG": str(config),
        "CIRRUS_SPOOL_DIR": str(work),
    }
    environment.pop(WORKERS_ENV, None)
    if workers is not None:
        environment[WORKERS_ENV] = workers
    return environment


def measure(
    args: argparse.Namespace, settings: Settings, work: Path, workers: str | None
) -> dict[str, float]:
    """Start the gateway with ``workers`` (None: the default), run the phases, stop it."""
    port = free_port()
    environment = gateway_environment(settings, args.source.resolve(), work, port, workers)
    log = work / "gateway.log"
    results: dict[str, float] = {}
    with log.open("wb") as log_file:
        # A file, not a pipe, so that a full pipe cannot block the gateway's logging.
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway.main"],
            cwd=args.source.resolve(),
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, gateway)
        memory = GatewayMemory(gateway.pid)
        if memory.serving != [gateway.pid]:
            wait_for_log(log, "gateway workers listening", gateway)
        results["serving processes"] = len(memory.serving)
        results["idle RSS of the started process, MiB"] = memory_kib(gateway.pid, "VmRSS") / 1024
        results["idle RSS of one serving process, MiB"] = (
            max(memory_kib(pid, "VmRSS") for pid in memory.serving) / 1024
        )
        results["idle RSS of all processes, MiB"] = (
            sum(memory_kib(pid, "VmRSS") for pid in process_tree(gateway.pid)) / 1024
        )

        _, small = synthetic_series(work, args.small, "BENCHMEMORY")
        started = time.perf_counter()
        run_senders([storescu(port, small)])
        results["small instances per second"] = len(small) / (time.perf_counter() - started)
        memory.record_peaks(results, f"{args.small} small")
        for path in small:
            path.unlink()

        large = work / "large.dcm"
        write_large_instance(large, args.large_mb * MIB)
        started = time.perf_counter()
        run_senders([storescu(port, [large])])
        results[f"{args.large_mb} MiB instance, s"] = time.perf_counter() - started
        memory.record_peaks(results, f"{args.large_mb} MiB")
        large.unlink()

        parallel = [work / f"parallel{index}.dcm" for index in range(args.parallel)]
        for path in parallel:
            write_large_instance(path, args.parallel_mb * MIB)
        started = time.perf_counter()
        run_senders([storescu(port, [path]) for path in parallel])
        label = f"{args.parallel} x {args.parallel_mb} MiB at once"
        results[f"{label}, s"] = time.perf_counter() - started
        memory.record_peaks(results, label)
        for path in parallel:
            path.unlink()
    finally:
        if gateway.poll() is None:
            gateway.terminate()
            gateway.wait(timeout=60)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="checkout of this repository whose gateway runs, by default this one",
    )
    parser.add_argument("--small", type=int, default=200, help="small instances to send")
    parser.add_argument("--large-mb", type=int, default=300, help="size of the large instance")
    parser.add_argument("--parallel", type=int, default=4, help="instances sent at once")
    parser.add_argument("--parallel-mb", type=int, default=100, help="size of each of them")
    args = parser.parse_args()
    use_local_credentials()

    work = Path(tempfile.mkdtemp(prefix="cirrus-bench-memory-"))
    moto = start_moto()
    columns: dict[str, dict[str, float]] = {}
    try:
        names = ResourceNames(deployment=f"m{uuid.uuid4().hex[:12]}")
        settings = create_resources(Settings.for_names(names, endpoint_url=moto.endpoint_url))
        for name, workers in CONFIGURATIONS.items():
            columns[name] = measure(args, settings, work, workers)
    finally:
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"gateway of {args.source}:")
    print(f"  {'':55s}" + "".join(f"{name:>28s}" for name in columns))
    for row in next(iter(columns.values())):
        values = "".join(f"{column[row]:28.1f}" for column in columns.values())
        print(f"  {row:55s}{values}")


if __name__ == "__main__":
    main()
