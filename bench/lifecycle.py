"""Time of ``cirrus stats`` and of a retention run on a deployment on moto.

Archives ``--studies`` studies of ``--study-size`` instances each (pydicom's CT_small.dcm with
new UIDs, 39 KB), half of them dated 2000-01-01 and half 2025-01-01, and indexes them through
the ingest handler. It then times the statistics per site and per modality, a retention dry
run, and a retention run that deletes the old half. moto runs in a child process on 127.0.0.1.

    .venv/bin/python bench/lifecycle.py --studies 40 --study-size 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import date
from io import BytesIO
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
from pydicom.uid import generate_uid

from cirrus.archive import archive_instance
from cirrus.config import ResourceNames, Settings
from cirrus.lifecycle import GroupBy
from cirrus.lifecycle.retention import Retention
from cirrus.lifecycle.rules import parse_rules
from cirrus.lifecycle.stats import statistics
from cirrus.local.moto_process import start_moto
from cirrus.local.resources import create_resources
from cirrus.services import Services
from functions.ingest import handler as ingest_handler
from tests.integration.index_snapshot import notifications_of
from tests.pydicom_files import bundled

SITE = "default"


def instance(study: str, series: str, study_date: str) -> bytes:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDate = study_date
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--study-size", type=int, default=10)
    args = parser.parse_args()
    moto = start_moto()
    try:
        names = ResourceNames(deployment=f"b{uuid.uuid4().hex[:12]}")
        settings = create_resources(Settings.for_names(names, endpoint_url=moto.endpoint_url))
        services = Services(settings)
        for number in range(args.studies):
            study, series = generate_uid(), generate_uid()
            study_date = "20000101" if number % 2 == 0 else "20250101"
            for _ in range(args.study_size):
                archive_instance(services.store, SITE, instance(study, series, study_date))
        records = notifications_of(services, "sites/")
        for start in range(0, len(records), 10):
            ingest_handler.handle({"Records": records[start : start + 10]}, None, services)
        rules = parse_rules(json.dumps({"rules": [{"site": SITE, "retain_years": 10}]}))
        retention = Retention(
            rules,
            services.index_model,
            services.store,
            services.audit,
            changes=services.change_feed,
            events=services.events,
            today=date(2026, 12, 5),
        )
        instances = args.studies * args.study_size
        print(f"{args.studies} studies of {args.study_size} instances ({instances} instances)")
        print("| step | seconds | result |")
        print("| --- | --- | --- |")

        def timed(label: str, run: Callable[[], object]) -> None:
            started = time.monotonic()
            result = run()
            print(f"| {label} | {time.monotonic() - started:.2f} | {result} |", flush=True)

        model = services.index_model
        timed("stats by site", lambda: statistics(model, [SITE], GroupBy.SITE))
        timed("stats by modality", lambda: statistics(model, [SITE], GroupBy.MODALITY))
        timed("retention dry run", lambda: retention.run(SITE, True, lambda _: None))
        timed("retention run", lambda: retention.run(SITE, False, lambda _: None))
        timed("stats after retention", lambda: statistics(model, [SITE], GroupBy.SITE))
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
