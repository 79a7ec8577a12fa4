"""Start time of ``cirrus dev`` on a data folder that contains archived instances.

moto keeps the index in memory, so every start rebuilds it from the data folder. For each
``--objects`` count the benchmark writes a data folder of studies of 10 small CT instances
(``bench/versus_fill.py``, 64x64 pixels, about 14 KB each) in the layout of
``FolderObjectStore``, starts the stack once to settle the folder's journals, then starts it
``--repeat`` times for each ``--code`` checkout in turn. It prints the seconds of each
rebuild as the stack logs them ("index rebuilt from the data folder ... seconds=") with the
1-minute load average at the end of each start, then the median per checkout. The stack runs
in a child process on 127.0.0.1 and is stopped by its PID.

    .venv/bin/python bench/rebuild_start.py --objects 1000 10000 --repeat 3 \\
        --code /path/to/old/checkout --code .
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "layers" / "shared" / "python"))

from bench.versus_fill import fill_study
from cirrus.storage.keys import InstanceKey

ROOT = Path(__file__).resolve().parents[1]
INSTANCES_PER_STUDY = 10
READY_LINE = "Cirrus local stack running"
REBUILT = re.compile(r"index rebuilt from the data folder .*seconds=([0-9.]+)")
START_TIMEOUT_SECONDS = 3600


def write_data_folder(data_dir: Path, objects: int) -> None:
    """Write ``objects`` instances in studies of 10 under the data folder's ``objects``."""
    root = data_dir / "objects"
    for number in range(objects // INSTANCES_PER_STUDY):
        study = fill_study(number, INSTANCES_PER_STUDY)
        for sop, part in zip(study.sop_uids, study.parts, strict=True):
            key = InstanceKey("default", study.study_uid, study.series_uid, sop)
            path = root / key.object_key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(part)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_seconds(code: Path, data_dir: Path) -> float:
    """Start the stack of ``code`` on ``data_dir``, and return the rebuild's logged seconds."""
    paths = f"{code / 'layers' / 'shared' / 'python'}{os.pathsep}{code}"
    environment = {
        **os.environ,
        "PYTHONPATH": paths,
        "PYTHONUNBUFFERED": "1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    command = [
        sys.executable, "-m", "cirrus.cli", "dev", "--data-dir", str(data_dir),
        "--dicom-port", str(free_port()), "--http-port", str(free_port()),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
    )
    assert process.stdout is not None
    seconds = None
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    try:
        for line in process.stdout:
            match = REBUILT.search(line)
            if match:
                seconds = float(match.group(1))
            if READY_LINE in line or time.monotonic() > deadline:
                break
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    if seconds is None:
        raise RuntimeError(f"the stack of {code} did not log its rebuild")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, nargs="+", default=[1000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--code", type=Path, action="append", help="checkout to start, repeat to alternate"
    )
    args = parser.parse_args()
    checkouts = [path.resolve() for path in args.code or [ROOT]]
    with tempfile.TemporaryDirectory(prefix="rebuild-start-") as folder:
        for objects in args.objects:
            data_dir = Path(folder) / str(objects)
            write_data_folder(data_dir, objects)
            start_seconds(checkouts[0], data_dir)
            results: dict[Path, list[float]] = {code: [] for code in checkouts}
            for _ in range(args.repeat):
                for code in checkouts:
                    seconds = start_seconds(code, data_dir)
                    results[code].append(seconds)
                    load = os.getloadavg()[0]
                    print(f"{objects} objects, {code}: {seconds} s, load {load:.2f}", flush=True)
            for code, values in results.items():
                print(f"{objects} objects, {code}: median {statistics.median(values)} s")


if __name__ == "__main__":
    main()
