"""A soak run against ``cirrus dev``: parallel C-STORE and STOW-RS under continuous reads.

``run_soak`` sends synthetic CT instances (``bench/cstore.py``'s generator, at a chosen size)
over several C-STORE associations (pynetdicom) and STOW-RS requests at once, while reader
threads run QIDO-RS searches and WADO-RS metadata and instance retrieves without pause.
``check_soak`` then compares what was acknowledged with the index (QIDO counts per study and
series) and with the data folder, and looks for 5xx responses, failed stores, a stopped stack
and tracebacks in its log. ``bench/soak.py`` runs it at full size, and
``tests/e2e/test_soak.py`` at a size that suits CI.
"""

from __future__ import annotations

import itertools
import random
import statistics
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Final

import numpy as np
import pydicom
import requests
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from bench.cstore import synthetic_ct
from cirrus.dicomweb.multipart import Part, build_multipart_related
from tests.e2e.conftest import RunningStack

CSTORE: Final = "C-STORE"
STOW: Final = "STOW-RS"
QIDO: Final = "QIDO-RS"
METADATA: Final = "WADO-RS metadata"
RETRIEVE: Final = "WADO-RS instance"
NUMBER_OF_SERIES_RELATED_INSTANCES: Final = "00201209"
NUMBER_OF_STUDY_RELATED_INSTANCES: Final = "00201208"
NUMBER_OF_STUDY_RELATED_SERIES: Final = "00201206"
SERIES_INSTANCE_UID: Final = "0020000E"
HTTP_TIMEOUT_SECONDS: Final = 120
DIMSE_TIMEOUT_SECONDS: Final = 120


@dataclass(frozen=True)
class SoakConfig:
    """The size of a soak run.

    ``instances`` are split into series of ``series_size`` and studies of
    ``series_per_study`` series. Each series is sent whole by one sender: one of
    ``associations`` C-STORE associations or ``stow_senders`` STOW-RS senders, in turn.
    """

    instances: int = 10_000
    associations: int = 8
    stow_senders: int = 1
    stow_batch: int = 5
    series_size: int = 50
    series_per_study: int = 5
    rows: int = 128
    readers: int = 2
    indexed_timeout: float = 600.0


@dataclass
class Operations:
    """Latencies and HTTP or DIMSE statuses of every operation, by kind, shared by threads."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, seconds: float, status: int) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            self.statuses[kind][status] += 1

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    def server_errors(self) -> int:
        return sum(
            count
            for kind, counter in self.statuses.items()
            if kind != CSTORE
            for status, count in counter.items()
            if status >= 500
        )


@dataclass
class SoakResult:
    config: SoakConfig
    operations: Operations
    # Acknowledged instances: study -> series -> SOP Instance UIDs.
    acknowledged: dict[str, dict[str, set[str]]]
    send_seconds: float
    indexed_seconds: float
    all_indexed: bool
    # Readers run from the start until every instance is indexed or the wait times out.
    read_seconds: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    @property
    def acknowledged_count(self) -> int:
        return sum(len(sops) for series in self.acknowledged.values() for sops in series.values())

    def summary(self) -> list[str]:
        """Return the report lines: sizes, throughput and latency percentiles per operation."""
        config = self.config
        lines = [
            f"{self.acknowledged_count} instances acknowledged ({config.rows}x{config.rows} "
            f"16-bit CT), {config.associations} C-STORE associations, {config.stow_senders} "
            f"STOW-RS sender(s) of {config.stow_batch} instances per request, "
            f"{config.readers} reader(s)",
            f"sent in {self.send_seconds:.1f} s: "
            f"{self.acknowledged_count / self.send_seconds:.1f} instances/s acknowledged",
            f"{'all' if self.all_indexed else 'NOT all'} indexed "
            f"{self.indexed_seconds:.1f} s after the last acknowledgement",
            f"load average before {self.load_before}, after {self.load_after}",
            "| operation | count | per s | p50 ms | p95 ms | max ms | statuses |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for kind, values in sorted(self.operations.latencies.items()):
            ordered = sorted(values)
            seconds = self.send_seconds if kind in (CSTORE, STOW) else self.read_seconds
            p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
            statuses = ", ".join(
                f"{status:#06x}" if kind == CSTORE else str(status)
                for status in sorted(self.operations.statuses[kind])
            )
            lines.append(
                f"| {kind} | {len(values)} | {len(values) / seconds:.1f} | "
                f"{statistics.median(ordered) * 1000:.0f} | {p95 * 1000:.0f} | "
                f"{ordered[-1] * 1000:.0f} | {statuses} |"
            )
        lines.append(f"5xx responses: {self.operations.server_errors()}")
        return lines


@dataclass(frozen=True)
class SeriesPlan:
    study: str
    series: str
    count: int


def plan_series(config: SoakConfig) -> list[SeriesPlan]:
    plans = []
    remaining = config.instances
    study = generate_uid()
    while remaining > 0:
        if len(plans) % config.series_per_study == 0 and plans:
            study = generate_uid()
        count = min(config.series_size, remaining)
        plans.append(SeriesPlan(study, generate_uid(), count))
        remaining -= count
    return plans


class Soak:
    """One soak run's threads and shared state."""

    def __init__(self, stack: RunningStack, config: SoakConfig) -> None:
        self.stack = stack
        self.config = config
        self.operations = Operations()
        self.acknowledged: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.acknowledged_lock = threading.Lock()
        self.stop_reading = threading.Event()
        rng = np.random.default_rng(1)
        shape = (config.rows, config.rows)
        self.pixels = rng.integers(-1000, 2000, size=shape, dtype=np.int16)

    def instances(self, plan: SeriesPlan) -> list[Dataset]:
        frame = generate_uid()
        return [
            synthetic_ct(plan.study, plan.series, frame, number, "SOAK", self.pixels)
            for number in range(1, plan.count + 1)
        ]

    def acknowledge(self, ds: Dataset) -> None:
        with self.acknowledged_lock:
            self.acknowledged[ds.StudyInstanceUID][ds.SeriesInstanceUID].add(ds.SOPInstanceUID)

    def acknowledged_sample(self) -> tuple[str, str, str] | None:
        with self.acknowledged_lock:
            if not self.acknowledged:
                return None
            study = random.choice(list(self.acknowledged))
            series = random.choice(list(self.acknowledged[study]))
            sop = random.choice(list(self.acknowledged[study][series]))
        return study, series, sop

    def cstore_sender(self, plans: list[SeriesPlan]) -> None:
        ae = AE("SOAK")
        ae.acse_timeout = ae.network_timeout = 60
        ae.dimse_timeout = DIMSE_TIMEOUT_SECONDS
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", self.stack.dicom_port, ae_title="CIRRUS")
        if not assoc.is_established:
            self.operations.error("association not established")
            return
        try:
            for plan in plans:
                for ds in self.instances(plan):
                    started = time.perf_counter()
                    status = assoc.send_c_store(ds)
                    seconds = time.perf_counter() - started
                    code = int(status.get("Status", -1))
                    self.operations.record(CSTORE, seconds, code)
                    if code == 0:
                        self.acknowledge(ds)
                    else:
                        self.operations.error(f"C-STORE status {code:#06x}")
        finally:
            assoc.release()

    def stow_sender(self, plans: list[SeriesPlan]) -> None:
        session = requests.Session()
        url = f"{self.stack.dicomweb_url}/studies"
        for plan in plans:
            datasets = self.instances(plan)
            for start in range(0, len(datasets), self.config.stow_batch):
                batch = datasets[start : start + self.config.stow_batch]
                body, content_type = build_multipart_related(
                    [Part(encode(ds), content_type="application/dicom") for ds in batch],
                    "application/dicom",
                )
                started = time.perf_counter()
                response = session.post(
                    url,
                    data=body,
                    headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
                    timeout=HTTP_TIMEOUT_SECONDS,
                )
                self.operations.record(STOW, time.perf_counter() - started, response.status_code)
                if response.status_code == 200:
                    for ds in batch:
                        self.acknowledge(ds)
                else:
                    self.operations.error(f"STOW-RS status {response.status_code}")

    def reader(self) -> None:
        session = requests.Session()
        base = self.stack.dicomweb_url
        for turn in itertools.count():
            if self.stop_reading.is_set():
                return
            sample = self.acknowledged_sample()
            if sample is None:
                time.sleep(0.05)
                continue
            study, series, sop = sample
            kind = (QIDO, METADATA, RETRIEVE)[turn % 3]
            if kind == QIDO:
                url = f"{base}/studies/{study}/series"
                headers = {"Accept": "application/dicom+json"}
            elif kind == METADATA:
                url = f"{base}/studies/{study}/series/{series}/metadata"
                headers = {"Accept": "application/dicom+json"}
            else:
                url = f"{base}/studies/{study}/series/{series}/instances/{sop}"
                headers = {"Accept": 'multipart/related; type="application/dicom"'}
            started = time.perf_counter()
            try:
                response = session.get(url, headers=headers, timeout=HTTP_TIMEOUT_SECONDS)
            except requests.RequestException as exc:
                self.operations.error(f"{kind} failed: {exc}")
                continue
            self.operations.record(kind, time.perf_counter() - started, response.status_code)

    def run(self) -> SoakResult:
        config = self.config
        plans = plan_series(config)
        senders = config.associations + config.stow_senders
        shares = [plans[index::senders] for index in range(senders)]
        load_before = _load()
        threads = [
            threading.Thread(target=self.cstore_sender, args=(shares[index],))
            for index in range(config.associations)
        ]
        threads += [
            threading.Thread(target=self.stow_sender, args=(shares[config.associations + index],))
            for index in range(config.stow_senders)
        ]
        readers = [threading.Thread(target=self.reader) for _ in range(config.readers)]
        started = time.perf_counter()
        for thread in threads + readers:
            thread.start()
        for thread in threads:
            thread.join()
        send_seconds = time.perf_counter() - started
        acknowledged_at = time.perf_counter()
        indexed = self.wait_indexed(acknowledged_at + config.indexed_timeout)
        indexed_seconds = time.perf_counter() - acknowledged_at
        self.stop_reading.set()
        for thread in readers:
            thread.join()
        read_seconds = time.perf_counter() - started
        if not indexed:
            self.operations.error(f"not all instances indexed after {config.indexed_timeout} s")
        return SoakResult(
            config,
            self.operations,
            {study: dict(series) for study, series in self.acknowledged.items()},
            send_seconds,
            indexed_seconds,
            indexed,
            read_seconds,
            load_before,
            _load(),
        )

    def wait_indexed(self, deadline: float) -> bool:
        """Wait until QIDO counts every acknowledged instance in its study."""
        session = requests.Session()
        pending = set(self.acknowledged)
        while pending and time.perf_counter() < deadline:
            for study in list(pending):
                counts = study_counts(session, self.stack.dicomweb_url, study)
                expected = sum(len(sops) for sops in self.acknowledged[study].values())
                if counts is not None and counts[0] >= expected:
                    pending.discard(study)
            if pending:
                time.sleep(0.5)
        return not pending


def encode(ds: Dataset) -> bytes:
    with BytesIO() as buffer:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()


def _load() -> tuple[float, float, float]:
    with open("/proc/loadavg") as file:
        first, second, third = file.read().split()[:3]
    return float(first), float(second), float(third)


def study_counts(session: requests.Session, base: str, study: str) -> tuple[int, int] | None:
    """Return NumberOfStudyRelatedInstances and -Series from QIDO, or None if not found."""
    response = session.get(
        f"{base}/studies",
        params={
            "StudyInstanceUID": study,
            "includefield": f"{NUMBER_OF_STUDY_RELATED_INSTANCES},{NUMBER_OF_STUDY_RELATED_SERIES}",
        },
        headers={"Accept": "application/dicom+json"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    if response.status_code == 204 or not response.content:
        return None
    (found,) = response.json()
    return (
        int(found[NUMBER_OF_STUDY_RELATED_INSTANCES]["Value"][0]),
        int(found[NUMBER_OF_STUDY_RELATED_SERIES]["Value"][0]),
    )


def run_soak(stack: RunningStack, config: SoakConfig) -> SoakResult:
    return Soak(stack, config).run()


def check_soak(stack: RunningStack, result: SoakResult) -> list[str]:
    """Return every discrepancy between the acknowledged instances and the stack's state.

    It compares QIDO's instance and series counts of each study, QIDO's instance count of
    each series and the instance files in the data folder with what was acknowledged. It
    also reports failed operations, 5xx responses, a stopped stack and tracebacks in the
    stack's log. An empty list means the run is clean.
    """
    problems = list(result.operations.errors)
    if result.operations.server_errors():
        problems.append(f"{result.operations.server_errors()} responses with a 5xx status")
    session = requests.Session()
    base = stack.dicomweb_url
    stored = _stored_files(stack.data_dir)
    for study, series_map in result.acknowledged.items():
        expected = sum(len(sops) for sops in series_map.values())
        counts = study_counts(session, base, study)
        if counts != (expected, len(series_map)):
            problems.append(f"study {study}: QIDO counts {counts}, sent {expected}")
        sent = {series: len(sops) for series, sops in series_map.items()}
        indexed = _series_counts(session, base, study)
        if indexed != sent:
            problems.append(f"study {study}: QIDO series counts {indexed}, sent {sent}")
        for series, sops in series_map.items():
            files = stored.pop((study, series), set())
            if files != sops:
                problems.append(f"series {series}: {len(files)} files, {len(sops)} acknowledged")
    if stored:
        problems.append(f"{len(stored)} series in the data folder that no sender stored")
    if stack.process.poll() is not None:
        problems.append(f"the stack exited with {stack.process.returncode}")
    tracebacks = [line for line in stack.lines if "Traceback" in line]
    if tracebacks:
        problems.append(f"{len(tracebacks)} tracebacks in the stack's log")
    return problems


def _series_counts(session: requests.Session, base: str, study: str) -> dict[str, int]:
    response = session.get(
        f"{base}/studies/{study}/series",
        params={"includefield": NUMBER_OF_SERIES_RELATED_INSTANCES},
        headers={"Accept": "application/dicom+json"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    found: list[dict[str, Any]] = response.json() if response.content else []
    return {
        item[SERIES_INSTANCE_UID]["Value"][0]: int(
            item[NUMBER_OF_SERIES_RELATED_INSTANCES]["Value"][0]
        )
        for item in found
    }


def _stored_files(data_dir: Path) -> dict[tuple[str, str], set[str]]:
    """Return the SOP Instance UIDs of the instance files in the data folder, by series."""
    stored: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in Path(data_dir).rglob("*.dcm"):
        parts = path.parts
        if len(parts) >= 6 and parts[-6] == "studies" and parts[-4] == "series":
            stored[(parts[-5], parts[-3])].add(path.stem)
    return stored
