"""WADO-RS retrieve of a whole CT series from ``cirrus dev``, in MB/s.

Generates one series of synthetic CT instances (512x512, 16 bit) and sends it with storescu
to the gateway of a new ``cirrus dev``. Once QIDO lists every instance, it times
``GET /studies/{study}/series/{series}`` with requests, following the 303 of a staged
response, from sending the request to holding the whole body. Prints each run and the median
in MB/s (10^6 bytes per second) of the body received.

    .venv/bin/python bench/series_retrieve.py --instances 300 --runs 5

Everything listens on 127.0.0.1; the stack is a child process stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cstore import send, synthetic_series
from tests.e2e.conftest import start_stack


def wait_for_series(url: str, study: str, count: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    found = 0
    while time.monotonic() < deadline:
        response = requests.get(f"{url}/studies/{study}/instances", timeout=30)
        found = len(response.json()) if response.status_code == 200 else 0
        if found == count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{found} of {count} instances listed after {timeout:g} s")


def retrieve_series(url: str, study: str, series: str) -> tuple[int, float, int]:
    """Return the body size, the seconds taken and the status of the first response."""
    started = time.perf_counter()
    response = requests.get(
        f"{url}/studies/{study}/series/{series}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        timeout=600,
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    first = response.history[0].status_code if response.history else response.status_code
    return len(response.content), elapsed, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300, help="instances in the series")
    parser.add_argument("--runs", type=int, default=5, help="timed retrieves after a warm-up")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cirrus-bench-"))
    stack = None
    try:
        files = work / "files"
        files.mkdir()
        study, paths = synthetic_series(files, args.instances, "BENCH-RETRIEVE")
        stack = start_stack(work / "data")
        send(stack.dicom_port, "CIRRUS", paths, 4)
        url = stack.dicomweb_url
        wait_for_series(url, study, args.instances)
        series = requests.get(f"{url}/studies/{study}/series", timeout=30).json()
        series_uid = series[0]["0020000E"]["Value"][0]
        size, _, first = retrieve_series(url, study, series_uid)
        print(f"body {size / 1e6:.1f} MB, first response {first}, load {os.getloadavg()}")
        rates = []
        for run in range(args.runs):
            size, elapsed, _ = retrieve_series(url, study, series_uid)
            rates.append(size / elapsed / 1e6)
            print(f"run {run + 1}: {elapsed:.2f} s, {rates[-1]:.1f} MB/s")
        print(f"median {statistics.median(rates):.1f} MB/s over {args.runs} runs")
    finally:
        if stack is not None:
            stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
