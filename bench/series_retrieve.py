"""WADO-RS retrieve of a whole CT series from ``cirrus dev``, in MB/s.

Generates one series of synthetic CT instances (512x512, 16 bit) and sends it with storescu
to the gateway of a new ``cirrus dev`` of this checkout. Once QIDO lists every instance, it
times ``GET /studies/{study}/series/{series}`` with requests, following the 303 of a staged
response, from sending the request to holding the whole body. Prints each run and the median
in MB/s (10^6 bytes per second) of the body received, and the seconds until the first
response, which for Cirrus is the 303 sent once the body is staged.

``--baseline DIR`` runs a second ``cirrus dev`` from the checkout in DIR (such as a worktree
of main), and ``--orthanc`` runs Orthanc with its DICOMweb plugin as ``bench/versus.py`` does.
Each gets the same series. The retrieves then alternate, one from each per round, and the
ratio of this checkout's median to each other median is printed.

    .venv/bin/python bench/series_retrieve.py --instances 300 --runs 5
    .venv/bin/python bench/series_retrieve.py --instances 1000 --runs 7 --baseline ../main

Everything listens on 127.0.0.1, and every server is a child process stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cstore import ENV, send, synthetic_series
from tests.e2e.conftest import start_stack
from tests.peers.orthanc import BENCHMARK_SETTINGS, DICOMWEB_ROOT, start_orthanc

CHECKOUT = Path(__file__).resolve().parents[1]
ACCEPT = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


@dataclass
class Server:
    """One archive that serves the series, with the timings of its retrieves."""

    name: str
    dicomweb_url: str
    rates: list[float] = field(default_factory=list)
    first_responses: list[float] = field(default_factory=list)


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


def retrieve_series(url: str, study: str, series: str) -> tuple[int, float, float, int]:
    """Retrieve the series once, following a 303 as requests does.

    Returns the body size, the seconds until the first response, the seconds until the
    whole body, and the status of the first response.
    """
    with requests.Session() as session:
        started = time.perf_counter()
        response = session.get(
            f"{url}/studies/{study}/series/{series}",
            headers=ACCEPT,
            timeout=600,
            allow_redirects=False,
        )
        first = time.perf_counter() - started
        status = response.status_code
        if status == 303:
            response = session.get(response.headers["Location"], timeout=600)
        body = response.content
        elapsed = time.perf_counter() - started
    response.raise_for_status()
    return len(body), first, elapsed, status


def checkout_environment(checkout: Path) -> dict[str, str]:
    """Return this process's environment with PYTHONPATH set to ``checkout``'s packages."""
    path = f"{checkout / 'layers' / 'shared' / 'python'}{os.pathsep}{checkout}"
    return {**os.environ, "PYTHONPATH": path}


@contextmanager
def cirrus_server(
    name: str, checkout: Path, data: Path, study: str, paths: list[Path]
) -> Iterator[Server]:
    """Run ``cirrus dev`` of ``checkout`` with the series stored; stop it when the block ends."""
    stack = start_stack(data, environment=checkout_environment(checkout))
    try:
        send(stack.dicom_port, "CIRRUS", paths, 4)
        wait_for_series(stack.dicomweb_url, study, len(paths))
        yield Server(name, stack.dicomweb_url)
    finally:
        stack.stop()


@contextmanager
def orthanc_server(folder: Path, study: str, paths: list[Path]) -> Iterator[Server]:
    """Run Orthanc with the series stored by storescu; stop it when the block ends."""
    orthanc = start_orthanc(folder, environment=ENV, dicomweb=True, settings=BENCHMARK_SETTINGS)
    try:
        send(orthanc.dicom_port, orthanc.ae_title, paths, 4)
        url = orthanc.url + DICOMWEB_ROOT.rstrip("/")
        wait_for_series(url, study, len(paths))
        yield Server("Orthanc", url)
    finally:
        orthanc.stop()


def measure(servers: list[Server], study: str, runs: int) -> None:
    """Retrieve the series from each server in turn, ``runs`` rounds after a warm-up round."""
    series = {}
    for server in servers:
        found = requests.get(f"{server.dicomweb_url}/studies/{study}/series", timeout=30).json()
        series[server.name] = found[0]["0020000E"]["Value"][0]
        size, _, _, status = retrieve_series(server.dicomweb_url, study, series[server.name])
        print(f"{server.name}: body {size / 1e6:.1f} MB, first response {status}")
    for run in range(1, runs + 1):
        for server in servers:
            size, first, elapsed, _ = retrieve_series(
                server.dicomweb_url, study, series[server.name]
            )
            server.rates.append(size / elapsed / 1e6)
            server.first_responses.append(first)
            load = os.getloadavg()[0]
            print(
                f"run {run} {server.name}: {elapsed:.2f} s, first response after {first:.2f} s, "
                f"{server.rates[-1]:.1f} MB/s, load {load:.2f}"
            )
    for server in servers:
        print(
            f"{server.name}: median {statistics.median(server.rates):.1f} MB/s, first response "
            f"after {statistics.median(server.first_responses):.2f} s, over {runs} runs"
        )
    this = statistics.median(servers[0].rates)
    for other in servers[1:]:
        print(f"ratio this / {other.name}: {this / statistics.median(other.rates):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300, help="instances in the series")
    parser.add_argument("--runs", type=int, default=5, help="timed retrieves after a warm-up")
    parser.add_argument(
        "--baseline", type=Path, help="checkout whose cirrus dev runs alongside, for a ratio"
    )
    parser.add_argument(
        "--orthanc", action="store_true", help="run Orthanc alongside as well, for a ratio"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cirrus-bench-"))
    try:
        with ExitStack() as running:
            files = work / "files"
            files.mkdir()
            study, paths = synthetic_series(files, args.instances, "BENCH-RETRIEVE")
            servers = [
                running.enter_context(cirrus_server("this", CHECKOUT, work / "data", study, paths))
            ]
            if args.baseline is not None:
                baseline = args.baseline.resolve()
                servers.append(
                    running.enter_context(
                        cirrus_server("baseline", baseline, work / "baseline", study, paths)
                    )
                )
            if args.orthanc:
                servers.append(
                    running.enter_context(orthanc_server(work / "orthanc", study, paths))
                )
            measure(servers, study, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
