"""Peak memory of the gateway process while it stores large instances, and its small-instance rate.

Starts moto and the gateway's container entry point (``python -m gateway.main``) on 127.0.0.1,
sends instances with storescu and reads the gateway's resident set size from /proc: VmRSS
when idle and VmHWM (the peak so far) after each phase. The phases, in order:

1. small: ``--small`` synthetic CT instances of 512 KiB over one association;
2. large: one instance of ``--large-mb`` MiB;
3. parallel: ``--parallel`` instances of ``--parallel-mb`` MiB, one association each, at once.

    .venv/bin/python bench/gateway_memory.py
    .venv/bin/python bench/gateway_memory.py --source /path/to/other/checkout

``--source`` runs the gateway of another checkout of this repository (for example an older
commit, exported with ``git archive``), so that two versions can be compared on one machine.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--small", type=int, default=200, help="small instances to send")
    parser.add_argument("--large-mb", type=int, default=300, help="size of the large instance")
    parser.add_argument("--parallel", type=int, default=4, help="instances sent at once")
    parser.add_argument("--parallel-mb", type=int, default=100, help="size of each of them")
    args = parser.parse_args()
    use_local_credentials()

    work = Path(tempfile.mkdtemp(prefix="cirrus-bench-memory-"))
    moto = start_moto()
    gateway: subprocess.Popen[bytes] | None = None
    results: dict[str, float] = {}
    try:
        names = ResourceNames(deployment=f"m{uuid.uuid4().hex[:12]}")
        settings = create_resources(Settings.for_names(names, endpoint_url=moto.endpoint_url))
        config = work / "ae.json"
        config.write_text(json.dumps({"open": True}))
        port = free_port()
        source = args.source.resolve()
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
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway.main"],
            cwd=source,
            env=environment,
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(port, gateway)
        results["idle RSS, MiB"] = memory_kib(gateway.pid, "VmRSS") / 1024

        _, small = synthetic_series(work, args.small, "BENCHMEMORY")
        started = time.perf_counter()
        run_senders([storescu(port, small)])
        results["small instances per second"] = len(small) / (time.perf_counter() - started)
        results["peak RSS after small, MiB"] = memory_kib(gateway.pid, "VmHWM") / 1024

        large = work / "large.dcm"
        write_large_instance(large, args.large_mb * MIB)
        started = time.perf_counter()
        run_senders([storescu(port, [large])])
        results[f"{args.large_mb} MiB instance, s"] = time.perf_counter() - started
        results[f"peak RSS after {args.large_mb} MiB, MiB"] = (
            memory_kib(gateway.pid, "VmHWM") / 1024
        )
        large.unlink()

        parallel = [work / f"parallel{index}.dcm" for index in range(args.parallel)]
        for path in parallel:
            write_large_instance(path, args.parallel_mb * MIB)
        started = time.perf_counter()
        run_senders([storescu(port, [path]) for path in parallel])
        label = f"{args.parallel} x {args.parallel_mb} MiB at once"
        results[f"{label}, s"] = time.perf_counter() - started
        results[f"peak RSS after {label}, MiB"] = memory_kib(gateway.pid, "VmHWM") / 1024
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.terminate()
            gateway.wait(timeout=60)
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"gateway of {args.source}:")
    for name, value in results.items():
        print(f"  {name:45s} {value:8.1f}")


if __name__ == "__main__":
    main()
