"""Throughput of ``cirrus verify`` and ``cirrus reindex`` on a deployment on moto.

Archives ``--instances`` instances (pydicom's CT_small.dcm with new UIDs, 39 KB, in series of
``--series-size``) in moto's S3 and indexes them through the ingest handler. It then times
four steps: verify of a consistent index, reindex of the emptied index, a second reindex that
finds every object unchanged, and verify again. moto runs in a child process on 127.0.0.1.

    .venv/bin/python bench/operations.py --instances 300
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
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

from pydicom.uid import generate_uid

from cirrus.archive import archive_instance
from cirrus.config import ResourceNames, Settings
from cirrus.local.moto_process import start_moto
from cirrus.local.resources import create_resources
from cirrus.operations.checkpoint import Checkpoint
from cirrus.operations.reindex import reindex
from cirrus.operations.target import Target
from cirrus.operations.verify import verify
from cirrus.services import Services
from functions.ingest import handler as ingest_handler
from tests.integration.index_snapshot import notifications_of
from tests.integration.test_ingest import _instance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--series-size", type=int, default=50)
    args = parser.parse_args()
    moto = start_moto()
    try:
        names = ResourceNames(deployment=f"b{uuid.uuid4().hex[:12]}")
        settings = create_resources(Settings.for_names(names, endpoint_url=moto.endpoint_url))
        services = Services(settings)
        target = Target(services, "bench")
        study = generate_uid()
        for number in range(args.instances):
            if number % args.series_size == 0:
                series = generate_uid()
            archive_instance(services.store, "default", _instance(study, series))
        records = notifications_of(services, "sites/")
        for start in range(0, len(records), 10):
            ingest_handler.handle({"Records": records[start : start + 10]}, None, services)

        def timed(label: str, run: object) -> None:
            started = time.monotonic()
            counts = run()  # type: ignore[operator]
            seconds = time.monotonic() - started
            rate = args.instances / seconds
            print(f"| {label} | {seconds:.1f} | {rate:.0f} | {counts} |", flush=True)

        def run_verify() -> dict[str, int]:
            return verify(target, None, Checkpoint(None, "verify", ""), print).counts

        def run_reindex() -> dict[str, int]:
            return reindex(target, None, Checkpoint(None, "reindex", ""), lambda _: None).counts

        print(f"{args.instances} instances, series of {args.series_size}")
        print("| step | seconds | objects/s | counts |")
        print("| --- | --- | --- | --- |")
        timed("verify, consistent index", run_verify)
        for record in services.index_model.scan():
            record.delete()
        timed("reindex, emptied index", run_reindex)
        timed("reindex again, nothing to change", run_reindex)
        timed("verify after reindex", run_verify)
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
