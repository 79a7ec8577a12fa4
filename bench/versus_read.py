"""The read workloads of Cirrus's local stack and Orthanc, side by side in one run.

``load_target`` sends one study with one series of CT instances (512x512, 16 bit, explicit VR
little endian) to both archives. ``fill`` adds small studies of other patients
(``bench/versus_fill.py``) until each archive contains a given number of instances: by
C-STORE into both, or for the larger scales directly into Cirrus's data folder and index while
Orthanc receives them by C-STORE (``--direct-fill-above``). ``read_workloads`` then times the
same requests on both: QIDO-RS searches and lists, series metadata, WADO-RS series and frame
retrieval, a rendered thumbnail, C-FIND and C-MOVE, or above ``--all-workloads-up-to`` only
the study searches. The two servers take turns request by request, so that a change in the
machine's load reaches both alike. Each workload is one or two
``bench.results.Measurement`` (the median, and the p95 of latencies).

    .venv/bin/python bench/versus_read.py --instances 200 --stored 1000 --runs 10
    .venv/bin/python bench/versus_read.py --stored 1000 10000 100000 --runs 15

Everything listens on 127.0.0.1. Orthanc runs under the loopback shim of
``tests/peers/orthanc.py``; storescp, the C-MOVE destination, runs under the same shim. Every
child process is stopped by its PID. dcmtk and Orthanc run with ``TCP_NODELAY=1``, because
dcmtk 3.6.7 leaves Nagle's algorithm on otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pydicom
import requests
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cstore import send, synthetic_ct
from bench.results import Measurement, append
from bench.versus_fill import (
    FILL_STUDY_SIZE,
    Archive,
    DirectFill,
    FillStudy,
    fill_study,
    remove_tree,
    write_files,
)
from cirrus.local.datadir import saved_objects
from cirrus.local.endpoints import read_endpoints
from cirrus.local.moto_process import LOOPBACK
from tests.e2e.conftest import RunningStack, start_stack
from tests.gateway.retrieves import running_storescp
from tests.peers.orthanc import (
    BENCHMARK_SETTINGS,
    DICOMWEB_ROOT,
    Modality,
    Orthanc,
    free_port,
    missing_requirement,
    start_orthanc,
)

TCP_NODELAY_ENV: Final = {**os.environ, "TCP_NODELAY": "1"}
CIRRUS_AE_TITLE: Final = "CIRRUS"
# The storescp that both archives send C-MOVE results to, and the SCU that requests them.
MOVE_DESTINATION_AE: Final = "VERSUSSCP"
MOVE_CALLER_AE: Final = "VERSUSSCU"
ASSOCIATIONS: Final = 4
TARGET_PATIENT_ID: Final = "BENCHREAD-1"
TARGET_NAME_PREFIX: Final = "BENCHREAD"
# Fill studies generated, sent and written together, 1,000 instances.
FILL_CHUNK_STUDIES: Final = 10
# The defaults of ``add_scale_options``, in instances stored.
DIRECT_FILL_ABOVE: Final = 1000
ALL_WORKLOADS_UP_TO: Final = 10000
BACKEND: Final = "moto server, objects as files"
INDEX_TIMEOUT_SECONDS: Final = 1800.0
DCMTK_TIMEOUT_SECONDS: Final = 600.0
NUMBER_OF_STUDY_RELATED_INSTANCES: Final = "00201208"
DICOM_JSON: Final = {"Accept": "application/dicom+json"}


@dataclass(frozen=True)
class Target:
    """The study, and its series of ``instances`` CT instances, that every workload reads."""

    study_uid: str
    series_uid: str
    patient_id: str
    name_prefix: str
    instances: int
    # The first instance of the series, for the frame and rendered requests.
    instance_uid: str = ""


def cirrus_stack_options(folder: Path) -> list[str]:
    """Return the ``cirrus dev`` options that give the gateway the C-MOVE destination.

    The gateway reads its AE configuration once at start, so the destination's port is chosen
    here and ``read_workloads`` starts storescp on it. The gateway stays open: every calling
    AE title is a caller of the default site with every permission, as without the option.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    destination = {"host": LOOPBACK, "port": port}
    document = {
        "open": True,
        "sites": {"default": {"destinations": {MOVE_DESTINATION_AE: destination}}},
    }
    path = folder / "versus-ae.json"
    path.write_text(json.dumps(document, indent=2))
    return ["--ae-config", str(path)]


def _cirrus_move_port(cirrus: RunningStack) -> int | None:
    """Return the port of the stack's C-MOVE destination, or None if it was started without."""
    arguments = [str(argument) for argument in cirrus.process.args]  # type: ignore[union-attr]
    if "--ae-config" not in arguments:
        return None
    path = Path(arguments[arguments.index("--ae-config") + 1])
    destinations = json.loads(path.read_text())["sites"]["default"]["destinations"]
    destination = destinations.get(MOVE_DESTINATION_AE)
    return None if destination is None else int(destination["port"])


def _orthanc_dicomweb(orthanc: Orthanc) -> str:
    return orthanc.url + DICOMWEB_ROOT.rstrip("/")


def _write_series(
    folder: Path, count: int, patient_id: str, patient_name: str, size: int
) -> tuple[str, str, list[Path]]:
    """Write one series of ``count`` CT instances; return the study and series UIDs and paths."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(1)
    pixels = rng.integers(-1000, 2000, size=(size, size), dtype=np.int16)
    paths = []
    for number in range(1, count + 1):
        ds = synthetic_ct(study, series, frame, number, patient_id, pixels)
        ds.PatientName = patient_name
        path = folder / f"{number:05d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return study, series, paths


def _study_instance_count(session: requests.Session, dicomweb_url: str, study: str) -> int:
    """Return NumberOfStudyRelatedInstances of ``study`` as QIDO reports it, 0 if not found."""
    field = NUMBER_OF_STUDY_RELATED_INSTANCES
    url = f"{dicomweb_url}/studies?StudyInstanceUID={study}&includefield={field}"
    response = session.get(url, headers=DICOM_JSON, timeout=60)
    response.raise_for_status()
    if not response.content:
        return 0
    matches = response.json()
    if not matches:
        return 0
    value = matches[0].get(field, {}).get("Value", [0])
    return int(value[0])


def _wait_for_study(dicomweb_url: str, study: str, count: int, name: str) -> None:
    """Wait until QIDO at ``dicomweb_url`` counts ``count`` instances in ``study``."""
    deadline = time.monotonic() + INDEX_TIMEOUT_SECONDS
    with requests.Session() as session:
        while time.monotonic() < deadline:
            if _study_instance_count(session, dicomweb_url, study) >= count:
                return
            time.sleep(0.25)
    raise RuntimeError(f"{name} did not list {count} instances of study {study} in QIDO")


def _send_to_both(cirrus: RunningStack, orthanc: Orthanc, paths: list[Path]) -> tuple[float, float]:
    """Send ``paths`` to both archives with storescu; return each one's seconds."""
    cirrus_seconds = send(cirrus.dicom_port, CIRRUS_AE_TITLE, paths, ASSOCIATIONS)
    orthanc_seconds = send(orthanc.dicom_port, orthanc.ae_title, paths, ASSOCIATIONS)
    return cirrus_seconds, orthanc_seconds


def load_target(cirrus: RunningStack, orthanc: Orthanc, folder: Path, instances: int) -> Target:
    """Send a study of one ``instances``-instance CT series to both; return once both list it."""
    study, series, paths = _write_series(
        folder / "target", instances, TARGET_PATIENT_ID, f"{TARGET_NAME_PREFIX}^TARGET", 512
    )
    first = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SOPInstanceUID)
    _send_to_both(cirrus, orthanc, paths)
    _wait_for_study(cirrus.dicomweb_url, study, instances, "Cirrus")
    _wait_for_study(_orthanc_dicomweb(orthanc), study, instances, "Orthanc")
    shutil.rmtree(folder / "target", ignore_errors=True)
    return Target(study, series, TARGET_PATIENT_ID, TARGET_NAME_PREFIX, instances, first)


def _orthanc_instance_count(orthanc: Orthanc) -> int:
    return int(orthanc.rest("GET", "/statistics")["CountInstances"])


def _cirrus_instance_count(cirrus: RunningStack) -> int:
    """Sum NumberOfStudyRelatedInstances over every study QIDO lists, a page at a time."""
    total, offset, page = 0, 0, 500
    field = NUMBER_OF_STUDY_RELATED_INSTANCES
    with requests.Session() as session:
        while True:
            url = f"{cirrus.dicomweb_url}/studies?includefield={field}&limit={page}&offset={offset}"
            response = session.get(url, headers=DICOM_JSON, timeout=120)
            response.raise_for_status()
            studies = response.json() if response.content else []
            total += sum(int(study[field]["Value"][0]) for study in studies)
            if len(studies) < page:
                return total
            offset += page


def fill(
    cirrus: RunningStack,
    orthanc: Orthanc,
    folder: Path,
    archive: Archive,
    total: int,
    *,
    direct: bool = False,
) -> Archive:
    """Add fill studies (``bench/versus_fill.py``) until each archive contains ``total``.

    ``archive`` is what both contain before. Orthanc receives the fill by C-STORE. Cirrus
    receives it by C-STORE too, or with ``direct`` from ``DirectFill``, while Orthanc receives
    it. Each fill study has its own patient (``FILL^nnnnnn``), so the target's searches match
    the same studies at every size. Returns what both contain after, and raises if Orthanc's
    count, Cirrus's QIDO count and Cirrus's archive objects differ.
    """
    stored = _orthanc_instance_count(orthanc)
    if stored != archive.stored:
        raise RuntimeError(
            f"Orthanc contains {stored} instances before the fill, not {archive.stored}"
        )
    writer = DirectFill.into_stack(cirrus.data_dir) if direct else None
    number = archive.fill_studies
    started = time.perf_counter()
    cirrus_seconds = orthanc_seconds = 0.0
    while stored < total:
        studies: list[FillStudy] = []
        pending = 0
        while stored + pending < total and len(studies) < FILL_CHUNK_STUDIES:
            number += 1
            studies.append(fill_study(number, min(FILL_STUDY_SIZE, total - stored - pending)))
            pending += len(studies[-1].parts)
        paths = [path for study in studies for path in write_files(study, folder / "fill")]
        if writer is not None:
            with _storescu_in_background(orthanc.dicom_port, orthanc.ae_title, paths) as sending:
                writing = time.perf_counter()
                writer.add_all(studies)
                cirrus_seconds += time.perf_counter() - writing
            orthanc_seconds += sending.seconds
        else:
            cirrus_send, orthanc_send = _send_to_both(cirrus, orthanc, paths)
            orthanc_seconds += orthanc_send
            for study in studies:
                _wait_for_study(cirrus.dicomweb_url, study.study_uid, len(study.parts), "Cirrus")
            cirrus_seconds += cirrus_send
        stored += pending
        shutil.rmtree(folder / "fill", ignore_errors=True)
    added = stored - archive.stored
    after = Archive(
        stored=_checked_count(cirrus, orthanc),
        direct=archive.direct + (added if direct else 0),
        fill_studies=number,
    )
    if added:
        way = "written directly" if direct else "acknowledged by C-STORE"
        print(
            f"fill to {after.stored:,}: {added:,} instances of 64x64 pixels {way} into Cirrus "
            f"at {added / cirrus_seconds:.0f} inst/s, by C-STORE into Orthanc at "
            f"{added / orthanc_seconds:.0f} inst/s; {time.perf_counter() - started:.0f} s in all",
            flush=True,
        )
    return after


@dataclass
class _Sending:
    """The storescu processes that ``_storescu_in_background`` runs, and when they ended."""

    processes: list[subprocess.Popen[bytes]]
    started: float
    waiters: list[threading.Thread] = dataclasses.field(default_factory=list)
    ended: list[float] = dataclasses.field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Return the seconds from the start until the last process ended."""
        return max(self.ended, default=self.started) - self.started


@contextmanager
def _storescu_in_background(port: int, ae_title: str, paths: list[Path]) -> Iterator[_Sending]:
    """Send ``paths`` with ``ASSOCIATIONS`` storescu processes while the block runs.

    After the block, waits for them and raises if one failed. If the block raises, or the
    wait is interrupted, stops each process by its PID.
    """
    chunks = [paths[index::ASSOCIATIONS] for index in range(ASSOCIATIONS)]
    sending = _Sending([], time.perf_counter())

    def note_end(process: subprocess.Popen[bytes]) -> None:
        process.wait()
        sending.ended.append(time.perf_counter())

    try:
        for chunk in chunks:
            if chunk:
                command = ["storescu", "-aec", ae_title, LOOPBACK, str(port), *map(str, chunk)]
                process = subprocess.Popen(command, env=TCP_NODELAY_ENV, stdout=subprocess.DEVNULL)
                sending.processes.append(process)
                waiter = threading.Thread(target=note_end, args=(process,), daemon=True)
                waiter.start()
                sending.waiters.append(waiter)
        yield sending
        codes = [process.wait(timeout=DCMTK_TIMEOUT_SECONDS) for process in sending.processes]
        for waiter in sending.waiters:
            waiter.join()
        if any(codes):
            raise RuntimeError(f"storescu to {ae_title} failed with exit codes {codes}")
    finally:
        for process in sending.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _checked_count(cirrus: RunningStack, orthanc: Orthanc) -> int:
    """Return the instances both archives contain; raise if the three counts differ.

    The counts are Orthanc's ``/statistics``, the instances of every study that Cirrus's QIDO
    lists, and the instance objects in Cirrus's data folder.
    """
    in_orthanc = _orthanc_instance_count(orthanc)
    in_cirrus_index = _cirrus_instance_count(cirrus)
    in_cirrus_objects = sum(1 for _ in saved_objects(read_endpoints(cirrus.data_dir).objects_dir))
    if not in_orthanc == in_cirrus_index == in_cirrus_objects:
        raise RuntimeError(
            f"after the fill Orthanc lists {in_orthanc} instances, Cirrus's QIDO "
            f"{in_cirrus_index} and Cirrus's data folder holds {in_cirrus_objects} objects; "
            "both archives must hold the same instances"
        )
    return in_orthanc


def _percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Run a full garbage collection, then the block with the cyclic collector turned off.

    Decoding the JSON of 1,000 instances' metadata creates enough container objects to start
    a full collection in about every other request, which took 60 to 110 ms of the benchmark's
    own CPU on the 2-core development machine. Which archive's timings those collections
    landed in depended on everything the process had allocated before. Objects without
    reference cycles, such as decoded JSON, are still freed while the collector is off.
    """
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _alternate(
    cirrus_call: Callable[[], Any], orthanc_call: Callable[[], Any], runs: int, warmup: int = 1
) -> tuple[list[float], list[float], list[Any], list[Any]]:
    """Time ``runs`` calls of each after ``warmup`` untimed ones, the two taking turns.

    Each timed call runs with the garbage collector paused (``_collector_paused``), so that
    no timing includes a collection of the benchmark's own objects. Returns each side's
    seconds and the values the calls returned.
    """
    for _ in range(warmup):
        cirrus_call()
        orthanc_call()
    timings: dict[str, list[float]] = {"cirrus": [], "orthanc": []}
    values: dict[str, list[Any]] = {"cirrus": [], "orthanc": []}
    calls = {"cirrus": cirrus_call, "orthanc": orthanc_call}
    for run in range(runs):
        order = ["cirrus", "orthanc"] if run % 2 == 0 else ["orthanc", "cirrus"]
        for side in order:
            with _collector_paused():
                started = time.perf_counter()
                value = calls[side]()
                timings[side].append(time.perf_counter() - started)
            values[side].append(value)
    return timings["cirrus"], timings["orthanc"], values["cirrus"], values["orthanc"]


@dataclass
class _Reader:
    """One keep-alive HTTP client per archive, and what the measurements have in common."""

    cirrus_url: str
    orthanc_url: str
    stored: int
    runs: int
    cirrus_session: requests.Session
    orthanc_session: requests.Session

    def get(self, side: str, path: str, headers: dict[str, str]) -> requests.Response:
        """GET ``path`` verbatim (no percent-encoding of ``*``), failing on an error status."""
        session = self.cirrus_session if side == "cirrus" else self.orthanc_session
        base = self.cirrus_url if side == "cirrus" else self.orthanc_url
        response = session.get(base + path, headers=headers, timeout=DCMTK_TIMEOUT_SECONDS)
        if not response.ok:
            raise RuntimeError(
                f"{side} GET {path} failed with {response.status_code}: {response.text[:500]}"
            )
        return response

    def latency(
        self,
        workload: str,
        path: str,
        headers: dict[str, str],
        count: Callable[[requests.Response], int],
        note: str = "",
    ) -> list[Measurement]:
        """Time GET ``path`` on both; return p50 and p95.

        Raises if the two return different counts, or a count of 0: every workload reads
        something that both archives contain.
        """

        def call(side: str) -> Callable[[], int]:
            return lambda: count(self.get(side, path, headers))

        cirrus, orthanc, cirrus_counts, orthanc_counts = _alternate(
            call("cirrus"), call("orthanc"), self.runs
        )
        if (
            set(cirrus_counts) != set(orthanc_counts)
            or len(set(cirrus_counts)) != 1
            or cirrus_counts[0] == 0
        ):
            raise RuntimeError(
                f"{workload}: Cirrus returned {sorted(set(cirrus_counts))} results and Orthanc "
                f"{sorted(set(orthanc_counts))}; both must return the same results, at least one"
            )
        note = f"{cirrus_counts[0]} results; GET {path}" + (f"; {note}" if note else "")
        medians = (statistics.median(cirrus) * 1000, statistics.median(orthanc) * 1000)
        p95s = (_percentile(cirrus, 0.95) * 1000, _percentile(orthanc, 0.95) * 1000)
        return [
            _measurement(f"{workload}, p50", "ms", medians, False, self.stored, note),
            _measurement(f"{workload}, p95", "ms", p95s, False, self.stored, note),
        ]


def _measurement(
    workload: str,
    unit: str,
    values: tuple[float | None, float | None],
    higher: bool,
    stored: int,
    note: str,
) -> Measurement:
    """Return the Measurement of ``workload`` from (Cirrus, Orthanc) ``values``."""
    return Measurement(
        workload=workload,
        unit=unit,
        cirrus=values[0],
        peer="Orthanc",
        peer_value=values[1],
        higher_is_better=higher,
        stored=stored,
        backend=BACKEND,
        note=note,
    )


def _json_items(response: requests.Response) -> int:
    return len(response.json()) if response.content else 0


def _multipart_parts(response: requests.Response) -> tuple[int, int]:
    """Return the number of parts of a multipart/related body, and the body's bytes."""
    content_type = response.headers.get("Content-Type", "")
    boundary = ""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip('"')
    if not content_type.startswith("multipart/related") or not boundary:
        raise RuntimeError(f"expected a multipart/related body, got {content_type!r}")
    body = response.content
    delimiters = body.count(b"--" + boundary.encode())
    return delimiters - 1, len(body)


def _findscu(port: int, called: str, patient_id: str) -> int:
    """Run a study-level C-FIND by PatientID with findscu; return the matches it received."""
    result = subprocess.run(
        ["findscu", "-v", "-S", "-aet", MOVE_CALLER_AE, "-aec", called,
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={patient_id}",
         "-k", "StudyInstanceUID", LOOPBACK, str(port)],
        capture_output=True, text=True, env=TCP_NODELAY_ENV, timeout=DCMTK_TIMEOUT_SECONDS,
        check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    # findscu 3.6.7 exits with 0 even when the peer aborts, so its error line is checked too.
    if result.returncode != 0 or "Find Failed" in output:
        raise RuntimeError(f"findscu to {called} failed with {result.returncode}: {output[-2000:]}")
    # findscu 3.6.7 prints "Find Response: N (Pending)" for each match with -v.
    return sum(
        1 for line in output.splitlines() if "Find Response:" in line and "(Pending)" in line
    )


def _movescu(port: int, called: str, study: str, received: Path) -> int:
    """C-MOVE ``study`` to the storescp with movescu; return the instances it received.

    A move with failed sub-operations (status Warning) returns the instances that arrived;
    a refused or aborted move raises.
    """
    result = subprocess.run(
        ["movescu", "-v", "-S", "-aet", MOVE_CALLER_AE, "-aec", called,
         "-aem", MOVE_DESTINATION_AE, "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={study}", LOOPBACK, str(port)],
        capture_output=True, text=True, env=TCP_NODELAY_ENV, timeout=DCMTK_TIMEOUT_SECONDS,
        check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    finished = "Received Final Move Response" in output
    if not finished or ("(Success)" not in output and "(Warning" not in output):
        raise RuntimeError(f"movescu to {called} failed with {result.returncode}: {output[-2000:]}")
    count = sum(1 for path in received.iterdir() if path.is_file())
    for path in received.iterdir():
        path.unlink()
    return count


def _study_searches(reader: _Reader, target: Target) -> list[Measurement]:
    """Measure the QIDO-RS study searches by PatientID and by PatientName prefix."""
    return [
        *reader.latency("QIDO study search by PatientID", f"/studies?PatientID={target.patient_id}",
                        DICOM_JSON, _json_items),
        *reader.latency("QIDO study search by PatientName prefix",
                        f"/studies?PatientName={target.name_prefix}*", DICOM_JSON, _json_items,
                        "the * is sent verbatim, as Orthanc 1.10.1 does not percent-decode"),
    ]  # fmt: skip


def _http_workloads(reader: _Reader, target: Target) -> list[Measurement]:
    """Measure the DICOMweb workloads: QIDO, metadata, WADO-RS, frames and rendered."""
    study, series, instance = target.study_uid, target.series_uid, target.instance_uid
    series_path = f"/studies/{study}/series/{series}"
    instance_path = f"{series_path}/instances/{instance}"
    measurements = [
        *_study_searches(reader, target),
        *reader.latency("QIDO series of the study", f"/studies/{study}/series", DICOM_JSON,
                        _json_items),
        *reader.latency(f"QIDO instances of the {target.instances}-instance series",
                        f"{series_path}/instances", DICOM_JSON, _json_items),
        *reader.latency("series metadata, gzip", f"{series_path}/metadata",
                        {**DICOM_JSON, "Accept-Encoding": "gzip"}, _json_items),
        *reader.latency("series metadata, identity", f"{series_path}/metadata",
                        {**DICOM_JSON, "Accept-Encoding": "identity"}, _json_items),
        *reader.latency("frame 1 of an instance", f"{instance_path}/frames/1",
                        {"Accept": 'multipart/related; type="application/octet-stream"'},
                        lambda response: _multipart_parts(response)[0]),
        *reader.latency("rendered thumbnail (viewport=128,128)",
                        f"{instance_path}/rendered?viewport=128,128", {"Accept": "image/jpeg"},
                        lambda response: int(response.content[:2] == b"\xff\xd8"),
                        "instance /rendered with a viewport, as Orthanc's DICOMweb 1.7 has no "
                        "/thumbnail"),
    ]  # fmt: skip
    measurements.append(_series_retrieve(reader, target, series_path))
    return measurements


def _series_retrieve(reader: _Reader, target: Target, series_path: str) -> Measurement:
    """Measure WADO-RS retrieval of the whole series in MB/s, checking the part count."""
    headers = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    cirrus, orthanc, cirrus_bodies, orthanc_bodies = _alternate(
        lambda: _multipart_parts(reader.get("cirrus", series_path, headers)),
        lambda: _multipart_parts(reader.get("orthanc", series_path, headers)),
        min(reader.runs, 5),
    )
    for side, bodies in (("Cirrus", cirrus_bodies), ("Orthanc", orthanc_bodies)):
        if any(parts != target.instances for parts, _ in bodies):
            raise RuntimeError(f"{side} returned {bodies[0][0]} parts, not {target.instances}")
    cirrus_rate = statistics.median(
        b[1] / s / 1e6 for b, s in zip(cirrus_bodies, cirrus, strict=True)
    )
    orthanc_rate = statistics.median(
        b[1] / s / 1e6 for b, s in zip(orthanc_bodies, orthanc, strict=True)
    )
    note = (
        f"{target.instances} parts, {cirrus_bodies[0][1] / 1e6:.0f} MB from Cirrus, "
        f"{orthanc_bodies[0][1] / 1e6:.0f} MB from Orthanc; {len(cirrus)} runs"
    )
    rates = (cirrus_rate, orthanc_rate)
    return _measurement("WADO-RS series retrieve", "MB/s", rates, True, reader.stored, note)


def _find_workload(
    cirrus: RunningStack, orthanc: Orthanc, target: Target, stored: int, runs: int
) -> Measurement:
    """Measure a study-level C-FIND by PatientID with findscu, after one warm-up run."""
    cirrus_find, orthanc_find, cirrus_matches, orthanc_matches = _alternate(
        lambda: _findscu(cirrus.dicom_port, CIRRUS_AE_TITLE, target.patient_id),
        lambda: _findscu(orthanc.dicom_port, orthanc.ae_title, target.patient_id),
        runs,
    )
    if 0 in cirrus_matches or set(cirrus_matches) != set(orthanc_matches):
        raise RuntimeError(
            f"C-FIND matched {cirrus_matches} in Cirrus, {orthanc_matches} in Orthanc"
        )
    note = f"findscu whole process, {cirrus_matches[0]} matches; TCP_NODELAY=1"
    medians = (statistics.median(cirrus_find) * 1000, statistics.median(orthanc_find) * 1000)
    return _measurement("C-FIND study by PatientID, p50", "ms", medians, False, stored, note)


def _move_workload(
    cirrus: RunningStack, orthanc: Orthanc, target: Target, stored: int, runs: int, folder: Path
) -> Measurement:
    """Measure C-MOVE of the target study to storescp with movescu, without a warm-up run."""
    port = _cirrus_move_port(cirrus)
    if port is None:
        raise RuntimeError(
            "the stack has no C-MOVE destination; start it with cirrus_stack_options(folder)"
        )
    with running_storescp(folder / "storescp", MOVE_DESTINATION_AE, port) as storescp:
        orthanc.add_modality("versusscp", Modality(MOVE_DESTINATION_AE, storescp.port))
        # Orthanc serves C-MOVE only to the calling AE titles it lists.
        orthanc.add_modality("versusscu", Modality(MOVE_CALLER_AE, storescp.port))
        cirrus_move, orthanc_move, cirrus_moved, orthanc_moved = _alternate(
            lambda: _movescu(cirrus.dicom_port, CIRRUS_AE_TITLE, target.study_uid, storescp.folder),
            lambda: _movescu(
                orthanc.dicom_port, orthanc.ae_title, target.study_uid, storescp.folder
            ),
            min(runs, 3),
            warmup=0,
        )

    rates: list[float | None] = []
    failures = []
    for side, moved, timings in (
        ("Cirrus", cirrus_moved, cirrus_move),
        ("Orthanc", orthanc_moved, orthanc_move),
    ):
        if all(count == target.instances for count in moved):
            rates.append(statistics.median(target.instances / seconds for seconds in timings))
        else:
            # A partial move is no throughput figure, so the side gets none and the note lists why.
            rates.append(None)
            failures.append(f"{side} delivered {moved} of {target.instances} instances")
    note = (
        f"movescu whole process, study of {target.instances} instances to storescp +xa; "
        f"{len(cirrus_move)} runs; TCP_NODELAY=1"
    )
    if failures:
        note += "; failed: " + ", ".join(failures)
        gateway_errors = [line for line in cirrus.lines if "ERROR" in line or "WARNING" in line]
        print("\n".join(["C-MOVE " + note, *gateway_errors[-20:]]), file=sys.stderr)
    return _measurement("C-MOVE of the study", "inst/s", (rates[0], rates[1]), True, stored, note)


def read_workloads(
    cirrus: RunningStack,
    orthanc: Orthanc,
    target: Target,
    archive: Archive,
    runs: int,
    *,
    searches_only: bool = False,
) -> list[Measurement]:
    """Measure every read workload on both archives, or with ``searches_only`` the searches.

    The searches are the QIDO-RS study searches and the C-FIND. Each workload but C-MOVE
    starts with one untimed request to each archive. C-MOVE moves the whole target study at
    most three times, and WADO-RS series retrieval runs at most five times, since each moves
    the whole series. Each note says how the archives were filled (``Archive.describe``).
    """
    stored = archive.stored
    with ExitStack() as stack:
        reader = _Reader(
            cirrus.dicomweb_url,
            _orthanc_dicomweb(orthanc),
            stored,
            runs,
            stack.enter_context(requests.Session()),
            stack.enter_context(requests.Session()),
        )
        if searches_only:
            measurements = _study_searches(reader, target)
        else:
            measurements = _http_workloads(reader, target)
        measurements.append(_find_workload(cirrus, orthanc, target, stored, runs))
        if not searches_only:
            folder = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="cirrus-versus-read-"))
            )
            measurements.append(_move_workload(cirrus, orthanc, target, stored, runs, folder))
    fill_note = f"fill: {archive.describe()}"
    return [dataclasses.replace(m, note=f"{m.note}; {fill_note}") for m in measurements]


@contextmanager
def running_pair(folder: Path) -> Iterator[tuple[RunningStack, Orthanc]]:
    """Run ``cirrus dev`` and Orthanc with DICOMweb until the block ends, both on loopback."""
    stack = start_stack(folder / "cirrus", *cirrus_stack_options(folder))
    try:
        orthanc = start_orthanc(
            folder / "orthanc",
            environment=TCP_NODELAY_ENV,
            dicomweb=True,
            settings=BENCHMARK_SETTINGS,
        )
        try:
            yield stack, orthanc
        finally:
            orthanc.stop()
    finally:
        stack.stop()


def _figure(value: float | None) -> str:
    return "failed" if value is None else f"{value:.2f}"


def _print(measurements: list[Measurement]) -> None:
    for item in measurements:
        ratio = "" if item.ratio is None else f"{item.ratio:.3f}"
        print(
            f"{item.stored:>7} {item.workload:48s} {item.unit:6s} "
            f"Cirrus {_figure(item.cirrus):>10}  Orthanc {_figure(item.peer_value):>10}  "
            f"ratio {ratio:>8}"
        )


def non_negative(text: str) -> int:
    """Parse a count that may be 0, for argparse."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more instances")
    return value


def add_scale_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose the fill and the workloads of each scale."""
    parser.add_argument(
        "--direct-fill-above",
        type=non_negative,
        default=DIRECT_FILL_ABOVE,
        metavar="INSTANCES",
        help="fill Cirrus directly (objects and index records, bench/versus_fill.py) for the "
        "scales above this many instances, and by C-STORE up to it; Orthanc is always filled "
        f"by C-STORE (default {DIRECT_FILL_ABOVE})",
    )
    parser.add_argument(
        "--all-workloads-up-to",
        type=non_negative,
        default=ALL_WORKLOADS_UP_TO,
        metavar="INSTANCES",
        help="run every read workload at the scales up to this many instances, and only the "
        f"study searches (QIDO-RS and C-FIND) above it (default {ALL_WORKLOADS_UP_TO})",
    )


def measure_scale(
    cirrus: RunningStack,
    orthanc: Orthanc,
    folder: Path,
    target: Target,
    archive: Archive,
    scale: int,
    runs: int,
    args: argparse.Namespace,
) -> tuple[Archive, list[Measurement]]:
    """Fill both archives to ``scale`` instances as ``args`` sets, then measure the reads."""
    started = time.perf_counter()
    archive = fill(cirrus, orthanc, folder, archive, scale, direct=scale > args.direct_fill_above)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"filled to {archive.stored:,} in {time.perf_counter() - started:.0f} s "
        f"({archive.describe()}); load average {load}",
        flush=True,
    )
    searches_only = scale > args.all_workloads_up_to
    started = time.perf_counter()
    measurements = read_workloads(
        cirrus, orthanc, target, archive, runs, searches_only=searches_only
    )
    kind = "the study searches" if searches_only else "every read workload"
    print(f"{kind} at {archive.stored:,} measured in {time.perf_counter() - started:.0f} s")
    return archive, measurements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--instances", type=int, default=1000, help="instances of the target series"
    )
    parser.add_argument(
        "--stored",
        type=int,
        nargs="+",
        default=[1000],
        help="archive sizes (instances) to measure at, in increasing order",
    )
    parser.add_argument("--runs", type=int, default=20, help="timed requests per workload")
    parser.add_argument("--output", type=Path, help="JSON lines file to append the results to")
    add_scale_options(parser)
    args = parser.parse_args()
    if min(args.stored) < args.instances:
        parser.error(f"--stored {min(args.stored)} is smaller than --instances {args.instances}")
    reason = missing_requirement()
    if reason is not None:
        sys.exit(f"versus_read: {reason}")
    work = Path(tempfile.mkdtemp(prefix="cirrus-versus-read-"))
    try:
        with running_pair(work) as (cirrus, orthanc):
            started = time.perf_counter()
            target = load_target(cirrus, orthanc, work, args.instances)
            print(f"target loaded in {time.perf_counter() - started:.0f} s", flush=True)
            archive = Archive(stored=args.instances)
            for size in sorted(args.stored):
                archive, measurements = measure_scale(
                    cirrus, orthanc, work, target, archive, size, args.runs, args
                )
                _print(measurements)
                print(f"load average: {os.getloadavg()}", flush=True)
                if args.output is not None:
                    append(args.output, measurements)
    finally:
        remove_tree(work)


if __name__ == "__main__":
    main()
