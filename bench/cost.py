"""Cost per unit of work: the AWS requests, DynamoDB units and Lambda CPU of each kind of work.

Runs the real handlers in this process against a moto server on 127.0.0.1. They are the
write path that C-STORE and STOW-RS share, and the ingest handler on the queued S3
notifications in batches of 10 (the batch size of the CDK stack's event source). Then come the
metadata refresh messages that ingest sends, and DICOMweb requests through its handler.
Every AWS call is counted (``tests.integration.aws_calls``), and the DynamoDB capacity units
are computed from the item sizes. CPU is ``time.process_time()`` around each handler call,
less the counter's own reads. moto runs in a process of its own, so its CPU is left out.

    .venv/bin/python bench/cost.py --series-sizes 1 10 100 --repeat 5

Each series size gets one study of two series of synthetic CT instances (512x512, 16 bit,
525 KB, the generator of ``bench/cstore.py``). STOW-RS stores one series, 50 instances per
request, and the write path alone stores the other, as the gateway does. Request rows count
the last repetition, when the metadata bundles are built. CPU figures are medians over the
repetitions, after a first study that is not reported, so they are those of warm invocations.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cstore import synthetic_ct
from bench.results import Measurement, append
from cirrus.archive import archive_instance
from cirrus.config import ResourceNames, Settings
from cirrus.dicomweb.bundle_refresh import MESSAGE_TYPE
from cirrus.dicomweb.multipart import Part, build_multipart_related
from cirrus.local.moto_process import start_moto, use_local_credentials
from cirrus.local.resources import create_resources
from cirrus.notifications import object_events
from cirrus.services import Services
from functions.dicomweb.handler import dicomweb_services
from functions.dicomweb.handler import handle as dicomweb_handle
from functions.ingest import handler as ingest_handler
from tests.integration.aws_calls import AwsCallCounter, proxy_event, sqs_record

SITE = "default"
BACKEND = "moto server, handlers in process"
# The batch size of the ingest function's SQS event source in the CDK stack.
INGEST_BATCH = 10
STOW_PER_REQUEST = 50
PATIENT_NAME = "COST^BENCH"
DICOM = 'multipart/related; type="application/dicom"'
OCTETS = 'multipart/related; type="application/octet-stream"'
_S3_PUTS = frozenset(
    {"s3:PutObject", "s3:UploadPart", "s3:CreateMultipartUpload", "s3:CompleteMultipartUpload"}
)
# The items that QIDO-RS may read per result it returns.
MAX_ITEMS_PER_RESULT = 2.0


@dataclass
class Row:
    """The AWS calls, capacity units and CPU of one kind of work, per unit of that work."""

    work: str
    unit: str
    calls: dict[str, float]
    write_units: float
    read_units: float
    items_read: float
    cpu_ms: list[float] = field(default_factory=list)
    # Write units by operation and table.
    write_by: dict[str, float] = field(default_factory=dict)
    # The results that a search returned, for the items read per result.
    results: int | None = None

    def total(self, prefix: str) -> float:
        return sum(count for name, count in self.calls.items() if name.startswith(prefix))

    @property
    def s3_puts(self) -> float:
        return sum(count for name, count in self.calls.items() if name in _S3_PUTS)

    @property
    def s3_gets(self) -> float:
        return self.total("s3:GetObject")

    @property
    def cpu(self) -> float | None:
        return statistics.median(self.cpu_ms) if self.cpu_ms else None


@dataclass
class StoredStudy:
    study: str
    patient_id: str
    series: str
    instances: list[str]


class CostRun:
    def __init__(self, services: Services, counter: AwsCallCounter) -> None:
        self.services = services
        self.counter = counter
        self.view = dicomweb_services(services)
        sqs = services.clients.sqs
        self.queue_url = sqs.get_queue_url(QueueName=services.settings.ingest_queue)["QueueUrl"]

    def measure(
        self, work: str, unit: str, units: int, action: Callable[[], None], cpu: bool = True
    ) -> Row:
        """Run ``action`` with every AWS call counted; return the counts per unit."""
        self.counter.reset()
        with self.counter.counting():
            started = time.process_time()
            action()
            elapsed = time.process_time() - started
        totals = self.counter.units
        return Row(
            work,
            unit,
            {name: count / units for name, count in self.counter.calls.items()},
            totals.write / units,
            totals.read / units,
            totals.items_read / units,
            [(elapsed - self.counter.overhead_seconds) * 1000 / units] if cpu else [],
            {name: value / units for name, value in totals.write_by.items()},
        )

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> dict[str, Any]:
        event = proxy_event(method, path, query, headers, body)
        response: dict[str, Any] = dicomweb_handle(event, None, self.view)
        if response["statusCode"] >= 400:
            raise RuntimeError(f"{method} {path} returned {response['statusCode']}")
        return response

    def queued_records(self) -> list[dict[str, Any]]:
        """Receive and delete every S3 notification of the ingest queue, uncounted."""
        sqs = self.services.clients.sqs
        records: list[dict[str, Any]] = []
        while True:
            messages = sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            if not messages:
                return records
            for message in messages:
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                if object_events(message["Body"]):
                    records.append(sqs_record(message["Body"]))


def synthetic_instances(study: str, series: str, count: int, patient_id: str) -> list[bytes]:
    frame = generate_uid()
    rng = np.random.default_rng(1)
    pixels = rng.integers(-1000, 2000, size=(512, 512), dtype=np.int16)
    encoded = []
    for number in range(1, count + 1):
        ds = synthetic_ct(study, series, frame, number, patient_id, pixels)
        ds.PatientName = PATIENT_NAME
        with BytesIO() as buffer:
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            encoded.append(buffer.getvalue())
    return encoded


def store_and_index(run: CostRun, size: int) -> tuple[StoredStudy, list[Row]]:
    """Store two series of ``size`` instances and index them; return the rows of each step."""
    study, stow_series, sent_series = generate_uid(), generate_uid(), generate_uid()
    patient_id = f"COST-{size}-{uuid.uuid4().hex[:6]}"
    stowed = synthetic_instances(study, stow_series, size, patient_id)
    sent = synthetic_instances(study, sent_series, size, patient_id)
    label = f"series of {size}"

    def stow() -> None:
        for start in range(0, len(stowed), STOW_PER_REQUEST):
            parts = [Part(p, "application/dicom") for p in stowed[start : start + STOW_PER_REQUEST]]
            body, content_type = build_multipart_related(parts, "application/dicom")
            run.request("POST", "/studies", headers={"Content-Type": content_type}, body=body)

    def write_path() -> None:
        for part10 in sent:
            archive_instance(run.services.store, SITE, part10, claims=run.services.claims)

    rows = [
        run.measure(f"STOW-RS, {label}", "instance", size, stow),
        # The gateway runs on ECS, so only its requests count, not its CPU.
        run.measure(f"C-STORE write path, {label}", "instance", size, write_path, cpu=False),
    ]
    records = run.queued_records()
    if len(records) != 2 * size:
        raise RuntimeError(f"expected {2 * size} notifications, received {len(records)}")

    def ingest() -> None:
        for start in range(0, len(records), INGEST_BATCH):
            event = {"Records": records[start : start + INGEST_BATCH]}
            response = ingest_handler.handle(event, None, run.services)
            if response["batchItemFailures"]:
                raise RuntimeError(f"ingest failed: {response}")

    rows.append(run.measure(f"ingest, {label}", "instance", 2 * size, ingest))
    # The refresh messages are delayed in the queue; delivering them here needs no wait.
    refreshes = [body for body in run.counter.sent_messages if MESSAGE_TYPE in body]

    def refresh() -> None:
        for body in refreshes:
            ingest_handler.handle({"Records": [sqs_record(body)]}, None, run.services)

    rows.append(run.measure(f"metadata refresh, {label}", "instance", 2 * size, refresh))
    uids = [str(pydicom.dcmread(BytesIO(p), stop_before_pixels=True).SOPInstanceUID) for p in sent]
    return StoredStudy(study, patient_id, sent_series, uids), rows


def requests_of(stored: StoredStudy) -> list[tuple[str, str, dict[str, str], dict[str, str]]]:
    """Return (kind, path, query, headers) of each DICOMweb request measured."""
    study, series = stored.study, stored.series
    instance = f"/studies/{study}/series/{series}/instances/{stored.instances[0]}"
    name_query = {"PatientName": f"{PATIENT_NAME[:4]}*", "limit": "25"}
    return [
        ("QIDO studies by PatientID", "/studies", {"PatientID": stored.patient_id}, {}),
        ("QIDO studies by name prefix", "/studies", name_query, {}),
        ("QIDO series of a study", f"/studies/{study}/series", {}, {}),
        ("QIDO instances of a series", f"/studies/{study}/series/{series}/instances", {}, {}),
        ("series metadata", f"/studies/{study}/series/{series}/metadata", {}, {}),
        ("WADO-RS instance", instance, {}, {"Accept": DICOM}),
        ("WADO-RS series", f"/studies/{study}/series/{series}", {}, {"Accept": DICOM}),
        ("frame", f"{instance}/frames/1", {}, {"Accept": OCTETS}),
        ("rendered", f"{instance}/rendered", {}, {"Accept": "image/jpeg"}),
    ]


def measure_requests(run: CostRun, stored: StoredStudy, repeat: int) -> list[Row]:
    rows = []
    label = f"series of {len(stored.instances)}"
    for kind, path, query, headers in requests_of(stored):
        cpu_ms: list[float] = []
        responses: list[dict[str, Any]] = []
        for _ in range(repeat):

            def get(
                path: str = path,
                query: dict[str, str] = query,
                headers: dict[str, str] = headers,
                responses: list[dict[str, Any]] = responses,
            ) -> None:
                responses.append(run.request("GET", path, query, headers))

            row = run.measure(f"{kind}, {label}", "request", 1, get)
            cpu_ms += row.cpu_ms
        row.cpu_ms = cpu_ms
        if kind.startswith("QIDO"):
            row.results = len(json.loads(response_body(responses[-1]) or b"[]"))
        rows.append(row)
    return rows


def response_body(response: dict[str, Any]) -> bytes:
    body = response.get("body") or ""
    return base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()


def print_table(rows: list[Row]) -> None:
    header = (
        "work", "per", "S3 PUT", "S3 GET", "S3 other", "KMS without bucket key", "DynamoDB",
        "WCU", "RCU", "items read", "items per result", "SQS", "EventBridge", "CPU ms",
    )  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        s3_other = row.total("s3:") - row.s3_puts - row.s3_gets
        per_result = f"{row.items_read / row.results:.2f}" if row.results else ""
        cpu = f"{row.cpu:.1f}" if row.cpu is not None else ""
        cells = (
            row.work, row.unit, f"{row.s3_puts:.2f}", f"{row.s3_gets:.2f}", f"{s3_other:.2f}",
            f"{kms_requests(row):.2f}", f"{row.total('dynamodb:'):.2f}", f"{row.write_units:.2f}",
            f"{row.read_units:.2f}", f"{row.items_read:.2f}", per_result,
            f"{row.total('sqs:'):.2f}", f"{row.total('events:'):.2f}", cpu,
        )  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    print()
    for row in rows:
        calls = ", ".join(f"{name} {count:.2f}" for name, count in sorted(row.calls.items()))
        print(f"{row.work}, per {row.unit}: {calls}")
        if row.write_by:
            units = ", ".join(f"{name} {value:.2f}" for name, value in sorted(row.write_by.items()))
            print(f"    write units: {units}")


def kms_requests(row: Row) -> float:
    """Return the KMS requests that S3 would make for the row's S3 calls without bucket keys.

    S3 requests a data key from KMS (GenerateDataKey) for each object written with SSE-KMS,
    and its decryption (Decrypt) for each read. The archive bucket enables S3 Bucket Keys,
    with which S3 reuses a bucket-level key for a time, so these requests mostly disappear.
    """
    return row.s3_puts - row.total("s3:UploadPart") + row.s3_gets


def measurements(rows: list[Row]) -> list[Measurement]:
    load = f"load {os.getloadavg()[0]:.2f}"
    out = []
    for row in rows:
        values: list[tuple[str, str, float | None, float | None]] = [
            ("S3 requests", "requests", row.total("s3:"), None),
            ("DynamoDB requests", "requests", row.total("dynamodb:"), None),
            ("DynamoDB WCU", "units", row.write_units, None),
            ("DynamoDB RCU", "units", row.read_units, None),
            ("Lambda CPU", "ms", row.cpu, None),
        ]
        if row.results:
            per_result = row.items_read / row.results
            values.append(("items read per result", "items", per_result, MAX_ITEMS_PER_RESULT))
        for what, unit, value, target in values:
            if value is None:
                continue
            out.append(
                Measurement(
                    workload=f"cost: {row.work}, {what}",
                    unit=f"{unit} per {row.unit}",
                    cirrus=value,
                    peer="AWS target" if target is not None else "",
                    peer_value=target,
                    higher_is_better=False,
                    backend=BACKEND,
                    note=load,
                )
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series-sizes", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of each request")
    parser.add_argument("--results", type=Path, help="JSON lines file to append Measurements to")
    args = parser.parse_args()

    use_local_credentials()
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
    moto = start_moto()
    try:
        names = ResourceNames(deployment=f"cost{uuid.uuid4().hex[:8]}")
        settings = create_resources(Settings.for_names(names, endpoint_url=moto.endpoint_url))
        services = Services(settings)
        run = CostRun(services, AwsCallCounter(moto.endpoint_url, settings.region))
        # A first study, not reported, so that one-time work (imports, the first invocation's
        # setup) stays out of the rows, as it stays out of a warm Lambda's invocations.
        store_and_index(run, 1)
        rows: list[Row] = []
        stored = []
        for size in args.series_sizes:
            study, study_rows = store_and_index(run, size)
            stored.append(study)
            rows += study_rows
        for study in stored:
            rows += measure_requests(run, study, args.repeat)
        now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        print(f"{now}, load average {os.getloadavg()[0]:.2f}")
        print_table(rows)
        if args.results:
            append(args.results, measurements(rows))
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
