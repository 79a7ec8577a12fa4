"""Cirrus's local stack and Orthanc side by side: every workload, measured in one run.

    .venv/bin/python bench/versus.py [--instances 1000] [--scales 1000 10000 100000] \\
        [--direct-fill-above 1000] [--all-workloads-up-to 10000] [--repeat 3] \\
        [--only ingest read gateway] [--out bench-results/versus.jsonl] [--report docs/images/]
    .venv/bin/python bench/versus.py --report-from bench-results/versus.jsonl

One run starts Orthanc (Debian's package with its DICOMweb plugin, tests/peers/orthanc.py's
benchmark settings) and one ``cirrus dev`` in a temporary folder, both on 127.0.0.1 and
stopped by their PID at the end, also on Ctrl-C, SIGTERM or a failure. The ingest workloads
run first (bench/versus_ingest.py). The read workloads follow (bench/versus_read.py): they load
the target series, then fill each archive to each scale and measure. Above
--direct-fill-above instances the fill writes Cirrus's objects and index records directly
(bench/versus_fill.py), and above --all-workloads-up-to only the study searches run. The
gateway alone against storescp runs last (bench/gateway_alone.py), because it starts its own
servers. Every figure is appended to --out as it is measured. The run then prints a table of
its figures with the ratio Cirrus / peer and the targets, and writes PNG plots into --report.
storescu and Orthanc run with TCP_NODELAY=1, and the Cirrus gateway sets it itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import results
from bench.gateway_ingest import NODELAY
from bench.results import Measurement
from bench.versus_fill import remove_tree
from bench.versus_ingest import Peers, ingest_workloads
from bench.versus_plots import write_plots
from bench.versus_read import add_scale_options, cirrus_stack_options
from bench.versus_report import format_table, table_rows
from cirrus.local.endpoints import ENDPOINTS_FILE
from tests.e2e.conftest import RunningStack, start_stack
from tests.peers.orthanc import (
    BENCHMARK_SETTINGS,
    DICOMWEB_PLUGIN,
    Orthanc,
    missing_requirement,
    start_orthanc,
)

PARTS = ("ingest", "read", "gateway")
# The modules that other parts come from, which a run imports before it starts any server.
PART_MODULES = {"read": "bench.versus_read", "gateway": "bench.gateway_alone"}


def positive(text: str) -> int:
    """Parse a count that must be at least 1, for argparse."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive count")
    return value


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--instances",
        type=positive,
        default=1000,
        help="instances per generated series (default 1000)",
    )
    parser.add_argument(
        "--scales",
        type=positive,
        nargs="+",
        default=[1000, 10000, 100000],
        help="instances stored in each archive when the read workloads run",
    )
    add_scale_options(parser)
    parser.add_argument(
        "--repeat", type=positive, default=3, help="repetitions of each workload (default 3)"
    )
    parser.add_argument(
        "--trials",
        type=positive,
        default=100,
        help="instances sent one by one to time C-STORE to visible in QIDO (default 100)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default all)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results/versus.jsonl"),
        help="JSON lines file that every measurement is appended to "
        "(default bench-results/versus.jsonl)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=Path("bench-results"),
        help="folder for the PNG plots (default bench-results)",
    )
    parser.add_argument(
        "--report-from",
        type=Path,
        help="print the table and draw the plots from this JSON lines file, without measuring",
    )

    args = parser.parse_args(argv)
    if "read" in args.only and min(args.scales) < args.instances:
        parser.error(
            f"--scales {min(args.scales)} is smaller than --instances {args.instances}: "
            "each archive holds the target series before it is filled"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.report_from is not None:
        report(list(results.load(args.report_from)), args.report)
        return
    check_part_modules(args.only)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    print(describe_machine(), flush=True)
    measured: list[Measurement] = []
    if "ingest" in args.only or "read" in args.only:
        reason = missing_requirement()
        if reason is None and not DICOMWEB_PLUGIN.is_file():
            reason = f"Orthanc's DICOMweb plugin is not installed at {DICOMWEB_PLUGIN}"
        if reason is not None:
            sys.exit(f"versus: {reason} (run scripts/system-deps test)")
    if "ingest" in args.only:
        with side_by_side() as (peers, folder):
            for figures in ingest_workloads(
                peers, folder, args.instances, args.repeat, args.trials
            ):
                measured += record(args.out, figures)
    if "read" in args.only:
        # New archives, so that both hold exactly the instances that the fill counts.
        with side_by_side() as (peers, folder):
            measured += read_part(peers, folder, args)
    if "gateway" in args.only:
        from bench.gateway_alone import gateway_alone

        measured += record(args.out, gateway_alone(args.instances, args.repeat))
    report(measured, args.report)


def check_part_modules(parts: list[str]) -> None:
    """Exit with the reason when the module of a requested part cannot be imported."""
    for part in parts:
        module = PART_MODULES.get(part)
        if module is None:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            sys.exit(f"versus: --only {part} needs {module}, which failed to import: {exc}")


def read_part(peers: Peers, folder: Path, args: argparse.Namespace) -> list[Measurement]:
    """Load the target series, then fill both archives to each scale and measure reads."""
    from bench.versus_fill import Archive
    from bench.versus_read import load_target, measure_scale

    measured = []
    target = load_target(peers.cirrus, peers.orthanc, folder, args.instances)
    archive = Archive(stored=args.instances)
    for scale in sorted(args.scales):
        archive, figures = measure_scale(
            peers.cirrus, peers.orthanc, folder, target, archive, scale, args.repeat, args
        )
        measured += record(args.out, [_with_backend(m, peers.backend) for m in figures])
    return measured


def record(out: Path, measurements: list[Measurement]) -> list[Measurement]:
    """Add the load average to each note, append the measurements to ``out``, return them."""
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    noted = [
        dataclasses.replace(m, note=f"{m.note}; load average {load}".lstrip("; "))
        for m in measurements
    ]
    results.append(out, noted)
    return noted


def report(measurements: list[Measurement], folder: Path) -> None:
    print(format_table(table_rows(measurements)))
    for path in write_plots(measurements, folder):
        print(f"wrote {path}")


@contextmanager
def side_by_side() -> Iterator[tuple[Peers, Path]]:
    """Run Orthanc and ``cirrus dev`` in one temporary folder; stop both and delete it after."""
    folder = Path(tempfile.mkdtemp(prefix="cirrus-versus-"))
    try:
        orthanc = start_orthanc(
            folder / "orthanc", environment=NODELAY, dicomweb=True, settings=BENCHMARK_SETTINGS
        )
        try:
            print(f"Orthanc {orthanc_version(orthanc)} on {orthanc.url}", flush=True)
            stack = start_stack(folder / "cirrus", *cirrus_stack_options(folder))
            try:
                yield Peers(stack, orthanc, describe_backend(stack)), folder
            except Exception:
                output = "\n".join(stack.lines[-40:])
                print(f"versus: failed; the last lines of cirrus dev:\n{output}", file=sys.stderr)
                raise
            finally:
                stop_stack(stack)
        finally:
            orthanc.stop()
    finally:
        remove_tree(folder)


def stop_stack(stack: RunningStack) -> None:
    """Stop ``cirrus dev`` as Ctrl-C does, and kill it by its PID if it has not ended in 60 s."""
    try:
        stack.stop()
    except subprocess.TimeoutExpired:
        stack.process.kill()
        stack.process.wait()


def describe_backend(stack: RunningStack) -> str:
    """Name the local services behind Cirrus, from the endpoints file of the running stack."""
    endpoints = json.loads((stack.data_dir / ENDPOINTS_FILE).read_text())
    objects = "objects as files" if endpoints.get("objects_dir") else "objects in moto's S3"
    endpoint = endpoints["env"].get("CIRRUS_AWS_ENDPOINT_URL", "AWS")
    return f"DynamoDB, SQS and KMS on moto server ({endpoint}); {objects}"


def orthanc_version(orthanc: Orthanc) -> str:
    system = orthanc.rest("GET", "/system")
    return str(system.get("Version", "unknown version"))


def describe_machine() -> str:
    dcmtk = subprocess.run(
        ["storescu", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}, {dcmtk[0] if dcmtk else 'dcmtk not found'}, "
        f"load average {load}"
    )


def _with_backend(measurement: Measurement, backend: str) -> Measurement:
    if measurement.backend:
        return measurement
    return dataclasses.replace(measurement, backend=backend)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through the finally blocks that stop both servers.
    print(f"versus: stopped by signal {signum}", file=sys.stderr)
    sys.exit(128 + signum)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # The servers were stopped by the finally blocks on the way out.
        print("versus: interrupted", file=sys.stderr)
        sys.exit(130)
