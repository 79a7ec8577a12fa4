"""Throughput of ``cirrus import`` of a folder into the local stack.

The benchmark starts ``cirrus dev`` on a new data folder. For each ``--workers`` count it
imports ``--repeat`` folders of ``--instances`` CT instances of 512x512 pixels, 16 bits
(pydicom's CT_small.dcm with new pixel data, about 520 KB each). Each folder has new UIDs,
so every instance is stored. Prints, per worker count, the median rate that
the import reports (instances stored per second of the run, without the command's start-up),
the median wall time of the command, and the median time until QIDO-RS finds every instance.
The stack runs in a child process on 127.0.0.1 and is stopped by its PID.

    .venv/bin/python bench/import_folder.py --instances 500 --repeat 3 --workers 1 4 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydicom
import requests
from pydicom.uid import generate_uid

from tests.e2e.conftest import start_stack
from tests.pydicom_files import bundled

SIZE = 512


def write_instances(folder: Path, count: int) -> str:
    """Write ``count`` CT instances of one new study to ``folder`` and return the study's UID."""
    template = pydicom.dcmread(bundled("CT_small.dcm"))
    template.Rows = template.Columns = SIZE
    template.PixelData = bytes(range(256)) * (SIZE * SIZE * 2 // 256)
    study, series = generate_uid(), generate_uid()
    for number in range(count):
        template.StudyInstanceUID, template.SeriesInstanceUID = study, series
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.InstanceNumber = number + 1
        template.save_as(folder / f"ct{number:05d}.dcm", enforce_file_format=True)
    return study


def wait_indexed(dicomweb_url: str, study: str, count: int) -> None:
    while True:
        response = requests.get(
            f"{dicomweb_url}/studies/{study}/instances", params={"limit": count}, timeout=60
        )
        if response.status_code == 200 and len(response.json()) >= count:
            return
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="import-bench-") as scratch:
        root = Path(scratch)
        stack = start_stack(root / "data")
        try:
            for workers in args.workers:
                rates, walls, indexed = [], [], []
                for attempt in range(args.repeat):
                    folder = root / f"in-{workers}-{attempt}"
                    folder.mkdir()
                    study = write_instances(folder, args.instances)
                    command = [
                        sys.executable, "-m", "cirrus.cli", "import", str(folder),
                        "--data-dir", str(stack.data_dir), "--workers", str(workers), "--json",
                    ]  # fmt: skip
                    start = time.monotonic()
                    result = subprocess.run(command, capture_output=True, text=True, check=False)
                    walls.append(time.monotonic() - start)
                    if result.returncode != 0:
                        raise SystemExit(f"import failed: {result.stderr}")
                    summary = json.loads(result.stdout.splitlines()[-1])["summary"]
                    assert summary["totals"]["stored"] == args.instances, summary
                    rates.append(summary["this_run"]["instances_per_second"])
                    wait_indexed(stack.dicomweb_url, study, args.instances)
                    indexed.append(time.monotonic() - start)
                print(
                    f"workers {workers}: {statistics.median(rates):.1f} instances/s in the run, "
                    f"command {statistics.median(walls):.2f} s, all indexed after "
                    f"{statistics.median(indexed):.2f} s (median of {args.repeat}, "
                    f"{args.instances} instances)",
                    flush=True,
                )
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
