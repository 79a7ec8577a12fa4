"""QIDO-RS study searches at 1,000 and 100,000 studies, on the local stack's moto child.

Loads synthetic index records straight into DynamoDB with batch writes, into one table per
scale on one moto process. They are the study, series, instance and modality marker records
that ingest writes, built with the same model and key functions, without S3 objects. Then it
runs each search kind through ``QidoService`` many times, the scales taking turns run by run
so that the machine's load affects each scale alike. It prints, per kind and scale, the
median latency, the items DynamoDB read per returned match (ScannedCount of each Query, plus
every item of a GetItem or BatchGetItem) and the Scan calls, which must be zero.

    .venv/bin/python bench/qido_scale.py --scales 1000 100000 --runs 30

The data keep the size of each search's result the same at every scale: 100 studies per
study date, 2.5 studies per patient, one family name in 25 is SMITH, and 20% of the studies
have a CT series. Every search requests ``limit=25``. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from pydicom.uid import CTImageStorage, MRImageStorage

from cirrus.config import ResourceNames, Settings
from cirrus.index.attributes import INSTANCE_TAGS, SERIES_TAGS, STUDY_TAGS, select
from cirrus.index.models import (
    INSTANCE,
    SERIES,
    STUDY,
    IndexRecord,
    bind_index_model,
    instance_sk,
    level_pk,
    level_shard,
    modality_marker,
    series_sk,
    study_index_keys,
    study_pk,
)
from cirrus.local.moto_process import start_moto, use_local_credentials
from cirrus.local.resources import create_resources
from cirrus.query.qido import QidoService

SITE = "default"
BASE = "http://127.0.0.1/dicomweb"
STUDIES_PER_DAY = 100
FAMILY_NAMES = ["SMITH"] + [f"FAMILY{n:02d}" for n in range(24)]
MODALITIES = ["CT", "CT", "MR", "MR", "US", "CR", "DX", "XA", "NM", "PT"]
FIRST_DAY = date(2020, 1, 1)


@dataclass
class ReadCounter:
    """Counts the items DynamoDB reads and the Scan calls, from botocore's parsed responses."""

    items: int = 0
    scans: int = 0
    calls: int = 0

    def __call__(self, **event: Any) -> None:
        operation = event["model"].name
        parsed = event["parsed"]
        self.calls += 1
        if operation == "Scan":
            self.scans += 1
            self.items += int(parsed.get("ScannedCount", 0))
        elif operation == "Query":
            self.items += int(parsed.get("ScannedCount", 0))
        elif operation == "GetItem":
            self.items += 1 if "Item" in parsed else 0
        elif operation == "BatchGetItem":
            self.items += sum(len(items) for items in parsed.get("Responses", {}).values())


@dataclass
class Synthetic:
    """The values of the generated studies that the searches refer to."""

    study_uids: list[str] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)
    accessions: list[str] = field(default_factory=list)
    days: int = 0


def _day(offset: int) -> str:
    return (FIRST_DAY + timedelta(days=offset)).strftime("%Y%m%d")


def _dicom(vr: str, value: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]}


def _records(model: type[IndexRecord], number: int, rng: random.Random) -> list[IndexRecord]:
    """Return the records ingest would write for one study with one series of one instance."""
    study, series, sop = (f"2.25.{number}.{part}" for part in (1, 2, 3))
    study_date = _day(number // STUDIES_PER_DAY)
    modality = MODALITIES[number % len(MODALITIES)]
    family = FAMILY_NAMES[rng.randrange(len(FAMILY_NAMES))]
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    metadata = {
        "00080016": _dicom("UI", sop_class),
        "00080018": _dicom("UI", sop),
        "00080020": _dicom("DA", study_date),
        "00080050": _dicom("SH", f"ACC{number:07d}"),
        "00080060": _dicom("CS", modality),
        "00081030": _dicom("LO", f"Study {number % 97}"),
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": f"{family}^GIVEN{number % 50}"}]},
        "00100020": _dicom("LO", f"PID{number * 2 // 5:07d}"),
        "0020000D": _dicom("UI", study),
        "0020000E": _dicom("UI", series),
        "00200013": _dicom("IS", 1),
    }
    pk = study_pk(SITE, study)
    shard = level_shard(study)
    study_attrs = select(metadata, STUDY_TAGS)
    study_record = model(
        pk,
        STUDY,
        level=STUDY,
        site=SITE,
        attrs=study_attrs,
        series_count=1,
        instance_count=1,
        modalities={modality},
        sop_classes={sop_class},
    )
    for name, value in study_index_keys(SITE, study, study_attrs).items():
        setattr(study_record, name, value)
    series_record = model(
        pk,
        series_sk(series),
        level=SERIES,
        site=SITE,
        level_pk=level_pk(SITE, SERIES, shard),
        level_sk=f"{study}#{series}",
        attrs=select(metadata, SERIES_TAGS),
        instance_count=1,
        modalities={modality},
    )
    instance_record = model(
        pk,
        instance_sk(series, sop),
        level=INSTANCE,
        site=SITE,
        level_pk=level_pk(SITE, INSTANCE, shard),
        level_sk=f"{study}#{series}#{sop}",
        attrs=select(metadata, INSTANCE_TAGS),
        object_key=f"{SITE}/{study}/{series}/{sop}.dcm",
        size=1000,
        etag="bench",
    )
    marker = modality_marker(model, study_record, modality)
    return [study_record, series_record, instance_record, marker]


def load(model: type[IndexRecord], first: int, count: int, data: Synthetic) -> float:
    """Write studies ``first`` to ``first + count - 1``; return the seconds it took."""
    rng = random.Random(first)
    started = time.perf_counter()
    with model.batch_write() as batch:
        for number in range(first, first + count):
            for record in _records(model, number, rng):
                batch.save(record)
            data.study_uids.append(f"2.25.{number}.1")
            data.accessions.append(f"ACC{number:07d}")
            data.patient_ids.append(f"PID{number * 2 // 5:07d}")
    data.days = (first + count) // STUDIES_PER_DAY
    return time.perf_counter() - started


def search_kinds(data: Synthetic, rng: random.Random) -> dict[str, Callable[[], dict[str, str]]]:
    """Return each search kind as a function that picks fresh parameters for one run."""

    def some(values: list[str]) -> str:
        return values[rng.randrange(len(values))]

    def day() -> int:
        return rng.randrange(max(1, data.days - 7))

    return {
        "StudyInstanceUID": lambda: {"StudyInstanceUID": some(data.study_uids)},
        "PatientID": lambda: {"PatientID": some(data.patient_ids)},
        "AccessionNumber": lambda: {"AccessionNumber": some(data.accessions)},
        "StudyDate (one day)": lambda: {"StudyDate": _day(day())},
        "StudyDate (7-day range)": lambda: {
            "StudyDate": f"{_day(start := day())}-{_day(start + 6)}"
        },
        "PatientName=SMITH*": lambda: {"PatientName": "SMITH*"},
        "PatientName=smi*": lambda: {"PatientName": "smi*"},
        "ModalitiesInStudy=CT, 3-day StudyDate": lambda: {
            "ModalitiesInStudy": "CT",
            "StudyDate": f"{_day(start := day())}-{_day(start + 2)}",
        },
        "ModalitiesInStudy=CT,MR, one day": lambda: {
            "ModalitiesInStudy": "CT,MR",
            "StudyDate": _day(day()),
        },
        "StudyDescription only (no index)": lambda: {"StudyDescription": "Study 5"},
    }


@dataclass
class Measured:
    median_ms: float
    items_per_match: float
    scans: int
    matches: float


@dataclass
class Scale:
    """One table loaded with ``studies`` studies, and the search service reading it."""

    studies: int
    qido: QidoService
    counter: ReadCounter
    kinds: dict[str, Callable[[], dict[str, str]]]
    timings: dict[str, list[float]] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    matches: dict[str, int] = field(default_factory=dict)
    scans: dict[str, int] = field(default_factory=dict)

    def search(self, name: str, *, measured: bool) -> None:
        query = {key: [value] for key, value in self.kinds[name]().items()}
        query["limit"] = ["25"]
        before_items, before_scans = self.counter.items, self.counter.scans
        started = time.perf_counter()
        result = self.qido.search(site=SITE, level="STUDY", params=query, base_url=BASE)
        elapsed = time.perf_counter() - started
        if not measured:
            return
        self.timings.setdefault(name, []).append(elapsed)
        self.items[name] = self.items.get(name, 0) + self.counter.items - before_items
        self.scans[name] = self.scans.get(name, 0) + self.counter.scans - before_scans
        self.matches[name] = self.matches.get(name, 0) + len(result.matches)

    def measured(self, name: str) -> Measured:
        runs = len(self.timings[name])
        matches = self.matches[name]
        return Measured(
            median_ms=statistics.median(self.timings[name]) * 1000,
            items_per_match=self.items[name] / matches if matches else float("nan"),
            scans=self.scans[name],
            matches=matches / runs,
        )


def load_scale(settings: Settings, studies: int) -> Scale:
    """Create a table of its own for ``studies`` studies and load it."""
    model = bind_index_model(settings)
    counter = ReadCounter()
    model._get_connection().connection.client.meta.events.register("after-call.dynamodb.*", counter)
    data = Synthetic()
    seconds = load(model, 0, studies, data)
    print(f"loaded {studies} studies in {seconds:.1f} s", flush=True)
    return Scale(studies, QidoService(model), counter, search_kinds(data, random.Random(studies)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1000, 100000])
    parser.add_argument("--runs", type=int, default=30, help="searches per kind and scale")
    args = parser.parse_args()
    use_local_credentials()
    moto = start_moto()
    try:
        scales = []
        for studies in sorted(args.scales):
            names = ResourceNames(deployment=f"bench{studies}")
            settings = create_resources(Settings.for_names(names, endpoint_url=moto.endpoint_url))
            scales.append(load_scale(settings, studies))
        for name in scales[0].kinds:
            # The search without an index reads 2,000 records a run, so it runs fewer times.
            runs = min(args.runs, 5) if "no index" in name else args.runs
            for scale in scales:  # unmeasured runs open the connections first
                for _ in range(3):
                    scale.search(name, measured=False)
            # The scales take turns, so a change in the machine's load reaches all of them.
            for run in range(runs):
                for scale in scales if run % 2 == 0 else reversed(scales):
                    scale.search(name, measured=True)
        _print_table(
            {scale.studies: {n: scale.measured(n) for n in scale.kinds} for scale in scales}
        )
    finally:
        moto.stop()


def _print_table(results: dict[int, dict[str, Measured]]) -> None:
    scales = sorted(results)
    low, high = scales[0], scales[-1]
    header = ["search (limit=25)", "matches"]
    for scale in scales:
        header += [f"ms at {scale:,}", f"items/match at {scale:,}"]
    header += [f"ratio {high:,} / {low:,}", "Scans"]
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for name in results[low]:
        row = [name, f"{results[high][name].matches:.1f}"]
        for scale in scales:
            measured = results[scale][name]
            row += [f"{measured.median_ms:.1f}", f"{measured.items_per_match:.2f}"]
        ratio = results[high][name].median_ms / results[low][name].median_ms
        scans = sum(results[scale][name].scans for scale in scales)
        row += [f"{ratio:.2f}", str(scans)]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
