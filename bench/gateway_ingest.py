"""End-to-end DICOM ingest into Orthanc and into Cirrus's local stack, measured in one run.

For each repetition and each association count, the benchmark generates one new series of
synthetic CT instances (512x512, 16 bit, explicit VR little endian, bench/cstore.py's
generator) and sends the same files with dcmtk's storescu to Orthanc, then to ``cirrus dev``.
A run ends when every instance is acknowledged and visible to a query. Orthanc indexes an
instance before it acknowledges it, and its REST API finds it at once. Cirrus indexes it
afterwards from the ingest queue, so for Cirrus the run also waits until QIDO counts the whole
series. The rates printed are for that end-to-end time, with the rate of acknowledgements
beside them.

    .venv/bin/python bench/gateway_ingest.py --instances 500 --repeat 3

Both servers run on 127.0.0.1 under this process (Orthanc with tests/peers/loopback_bind.c
preloaded) and are stopped by their PID. storescu and both servers run with TCP_NODELAY=1,
except in the extra Cirrus row whose storescu leaves Nagle's algorithm on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from dicomweb_client.api import DICOMwebClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cstore import send, synthetic_series
from tests.e2e.conftest import RunningStack, start_stack
from tests.peers.orthanc import Orthanc, missing_requirement, start_orthanc

NODELAY = {**os.environ, "TCP_NODELAY": "1"}
NAGLE = {key: value for key, value in os.environ.items() if key != "TCP_NODELAY"}
VISIBLE_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class Timing:
    acknowledged: float
    visible: float


def wait_visible(count_visible: Callable[[], int], expected: int) -> float:
    """Poll until ``count_visible`` reaches ``expected``; return the seconds it took."""
    started = time.perf_counter()
    while count_visible() < expected:
        if time.perf_counter() - started > VISIBLE_TIMEOUT_SECONDS:
            raise RuntimeError(f"fewer than {expected} instances visible after 600 s")
        time.sleep(0.05)
    return time.perf_counter() - started


def orthanc_count(orthanc: Orthanc, series: str) -> Callable[[], int]:
    query = {"Level": "Instance", "Query": {"SeriesInstanceUID": series}}
    return lambda: len(orthanc.rest("POST", "/tools/find", json=query))


def cirrus_count(stack: RunningStack, study: str) -> Callable[[], int]:
    client = DICOMwebClient(url=stack.dicomweb_url)

    def count() -> int:
        series = client.search_for_series(
            search_filters={"StudyInstanceUID": study}, fields=["00201209"]
        )
        return sum(int(item.get("00201209", {}).get("Value", [0])[0]) for item in series)

    return count


def measure(
    port: int,
    ae_title: str,
    paths: list[Path],
    associations: int,
    env: dict[str, str],
    count_visible: Callable[[], int],
) -> Timing:
    acknowledged = send(port, ae_title, paths, associations, env)
    return Timing(acknowledged, acknowledged + wait_visible(count_visible, len(paths)))


def run_workloads(
    work: Path, orthanc: Orthanc, stack: RunningStack, instances: int, repeat: int
) -> dict[str, list[Timing]]:
    """Send a new series to each server per repetition and workload; return the timings."""
    results: dict[str, list[Timing]] = {}
    for run in range(repeat):
        for associations in (1, 4):
            study, paths = synthetic_series(work, instances, f"BENCH{run}{associations}")
            timing = measure(
                orthanc.dicom_port,
                orthanc.ae_title,
                paths,
                associations,
                NODELAY,
                orthanc_count(orthanc, _series_uid(paths[0])),
            )
            results.setdefault(f"Orthanc, {associations} assoc", []).append(timing)
            timing = measure(
                stack.dicom_port, "CIRRUS", paths, associations, NODELAY, cirrus_count(stack, study)
            )
            results.setdefault(f"Cirrus, {associations} assoc", []).append(timing)
            for path in paths:
                path.unlink()
        study, paths = synthetic_series(work, instances, f"BENCH{run}NAGLE")
        timing = measure(stack.dicom_port, "CIRRUS", paths, 1, NAGLE, cirrus_count(stack, study))
        results.setdefault("Cirrus, 1 assoc, client with Nagle", []).append(timing)
        for path in paths:
            path.unlink()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=500, help="instances per series")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per workload")
    args = parser.parse_args()
    reason = missing_requirement()
    if reason is not None:
        sys.exit(f"gateway_ingest: {reason}")

    work = Path(tempfile.mkdtemp(prefix="cirrus-ingest-bench-"))
    try:
        orthanc = start_orthanc(work / "orthanc", environment=NODELAY)
        try:
            stack = start_stack(work / "cirrus")
            try:
                results = run_workloads(work, orthanc, stack, args.instances, args.repeat)
            finally:
                stack.stop()
        finally:
            orthanc.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{args.instances} CT instances of 512x512x16 bit, {args.repeat} repetitions, medians:")
    header = f"{'end-to-end inst/s':>18s} {'ack inst/s':>11s} {'ack to visible s':>17s}"
    print(f"  {'workload':40s} {header}")
    for name, timings in results.items():
        visible = statistics.median(args.instances / t.visible for t in timings)
        acked = statistics.median(args.instances / t.acknowledged for t in timings)
        lag = statistics.median(t.visible - t.acknowledged for t in timings)
        print(f"  {name:40s} {visible:18.1f} {acked:11.1f} {lag:17.2f}")
    for associations in (1, 4):
        cirrus = statistics.median(
            args.instances / t.visible for t in results[f"Cirrus, {associations} assoc"]
        )
        peer = statistics.median(
            args.instances / t.visible for t in results[f"Orthanc, {associations} assoc"]
        )
        print(f"  ratio Cirrus/Orthanc, {associations} assoc{'':18s} {cirrus / peer:8.2f}")


def _series_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


if __name__ == "__main__":
    main()
