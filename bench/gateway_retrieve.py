"""C-MOVE and C-GET out of the gateway, against Orthanc as the source, measured in one run.

Archives synthetic CT series (512x512, 16 bit) on moto, once as explicit VR little endian and
once as RLE Lossless, and indexes them as ingest would. A gateway in this process then serves
each series twice. C-MOVE with dcmtk's movescu sends it to dcmtk's storescp, which accepts
every syntax, so instances go as stored. C-GET with getscu sends it to getscu, which accepts
uncompressed syntaxes only, so RLE instances are decoded first. The same series uploaded to
Orthanc and moved by Orthanc to the same storescp gives the reference. Prints the median
instances per second.

    .venv/bin/python bench/gateway_retrieve.py --instances 200 --repeat 3

Everything listens on 127.0.0.1. storescp, Orthanc and moto run as child processes and are
stopped by their PIDs.
"""

from __future__ import annotations

import os

# Before anything imports boto3: fake credentials, and no instance metadata lookups.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydicom.uid import RLELossless

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cstore import synthetic_series
from cirrus.archive import archive_instance
from cirrus.config import ResourceNames, Settings
from cirrus.dicom.transcode import transcode
from cirrus.gateway.aeconfig import AEConfig, Destination, SiteAEs
from cirrus.gateway.server import Gateway
from cirrus.ingest import ObjectEvent, ingest_object
from cirrus.local.moto_process import LOOPBACK, start_moto
from cirrus.local.resources import create_resources
from cirrus.services import Services
from tests.gateway.retrieves import running_storescp
from tests.peers.orthanc import Modality, missing_requirement, start_orthanc

SITE = "bench"
ENV = {**os.environ, "TCP_NODELAY": "1"}
TIMEOUT_SECONDS = 600


def archive_series(services: Services, paths: list[Path], compress: bool) -> None:
    for path in paths:
        data = path.read_bytes()
        if compress:
            data = transcode(data, RLELossless)
            path.write_bytes(data)
        stored = archive_instance(services.store, SITE, data)
        event = ObjectEvent(stored.key.object_key, etag=stored.stored.etag)
        ingest_object(services.store, services.index_writer, event)


def run_tool(*args: str) -> float:
    """Run a dcmtk tool, fail on an error exit, and return the seconds it took."""
    started = time.perf_counter()
    result = subprocess.run(
        args, capture_output=True, text=True, env=ENV, timeout=TIMEOUT_SECONDS, check=False
    )
    elapsed = time.perf_counter() - started
    output = result.stdout + result.stderr
    if result.returncode != 0 or ("movescu" in args[0] and "(Success)" not in output):
        sys.exit(f"{args[0]} failed with {result.returncode}: {output[-2000:]}")
    return elapsed


def movescu(port: int, called: str, study: str) -> float:
    return run_tool(
        "movescu", "-v", "-S", "-aet", "BENCHSCU", "-aec", called, "-aem", "STORESCP",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
        LOOPBACK, str(port),
    )  # fmt: skip


def getscu(port: int, study: str, folder: Path) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    return run_tool(
        "getscu", "-S", "-aet", "BENCHSCU", "-aec", "CIRRUS", "-od", str(folder),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
        LOOPBACK, str(port),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=200, help="instances per series")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per workload")
    args = parser.parse_args()
    reason = missing_requirement()
    if reason is not None:
        sys.exit(f"gateway_retrieve: {reason}")

    work = Path(tempfile.mkdtemp(prefix="cirrus-retrieve-bench-"))
    moto = start_moto()
    results: dict[str, list[float]] = {}
    try:
        names = ResourceNames(deployment="retrieve-bench")
        settings = create_resources(Settings.for_names(names, endpoint_url=moto.endpoint_url))
        services = Services(settings)
        studies: dict[str, tuple[str, list[Path]]] = {}
        for label, compress in (("explicit VR LE", False), ("RLE Lossless", True)):
            folder = work / label.replace(" ", "-")
            folder.mkdir()
            study, paths = synthetic_series(folder, args.instances, f"BENCH-{label[:3]}")
            archive_series(services, paths, compress)
            studies[label] = (study, paths)
        with running_storescp(work / "storescp", "STORESCP") as storescp:
            config = AEConfig(
                sites={
                    SITE: SiteAEs(
                        callers={"BENCHSCU": frozenset({"retrieve"})},
                        destinations={"STORESCP": Destination(host=LOOPBACK, port=storescp.port)},
                    )
                }
            )
            # Orthanc serves C-MOVE only to the AE titles it lists.
            modalities = {
                "storescp": Modality("STORESCP", storescp.port),
                "benchscu": Modality("BENCHSCU", storescp.port),
            }
            orthanc = start_orthanc(work / "orthanc", modalities, environment=ENV)
            gateway = Gateway.start(services, config, LOOPBACK, 0)
            try:
                for _, paths in studies.values():
                    for path in paths:
                        orthanc.upload(path)
                workloads: dict[str, Callable[[int], float]] = {}
                for label, (study, _) in studies.items():
                    workloads[f"Orthanc C-MOVE, {label}"] = lambda run, s=study: movescu(
                        orthanc.dicom_port, orthanc.ae_title, s
                    )
                    workloads[f"Cirrus C-MOVE, {label}"] = lambda run, s=study: movescu(
                        gateway.port, "CIRRUS", s
                    )
                    workloads[f"Cirrus C-GET, {label}"] = lambda run, s=study, n=label: getscu(
                        gateway.port, s, work / "get" / f"{n.replace(' ', '-')}-{run}"
                    )
                for run in range(args.repeat):
                    for name, workload in workloads.items():
                        results.setdefault(name, []).append(workload(run))
            finally:
                gateway.shutdown()
                orthanc.stop()
    finally:
        moto.stop()

    print(f"{args.instances} CT instances of 512x512x16 bit, {args.repeat} repetitions, medians:")
    for name, timings in results.items():
        rate = statistics.median(args.instances / seconds for seconds in timings)
        print(f"  {name:40s} {rate:8.1f} inst/s")


if __name__ == "__main__":
    main()
