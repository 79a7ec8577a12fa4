"""The read workloads of Cirrus's local stack and Orthanc, side by side in one run.

``load_target`` sends one study with one series of CT instances (512x512, 16 bit, explicit VR
little endian) to both archives. ``fill`` adds small studies of other patients until each
archive contains a given number of instances. ``read_workloads`` then times the same requests
on both: QIDO-RS searches and lists, series metadata, WADO-RS series and frame retrieval, a
rendered thumbnail, C-FIND and C-MOVE. The two servers take turns request by request, so that
a change in the machine's load reaches both alike. Each workload is one or two
``bench.results.Measurement`` (the median, and the p95 of latencies).

    .venv/bin/python bench/versus_read.py --instances 200 --stored 1000 --runs 10

Everything listens on 127.0.0.1. Orthanc runs under the loopback shim of
``tests/peers/orthanc.py``; storescp, the C-MOVE destination, runs under the same shim. Every
child process is stopped by its PID. dcmtk and Orthanc run with ``TCP_NODELAY=1``, because
dcmtk 3.6.7 leaves Nagle's algorithm on otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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
# Instances per study of the fill; each fill study has one series of 64x64 images.
FILL_STUDY_SIZE: Final = 100
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


def fill(cirrus: RunningStack, orthanc: Orthanc, folder: Path, total: int) -> int:
    """Add studies of 64x64 CT instances by C-STORE until each archive contains ``total``.

    Each fill study has its own patient (``FILL^nnnnnn``), so the target's searches match
    the same studies as before. Returns the instance count both archives reached, and
    raises if they differ.

    TODO: fill Cirrus by writing index records and objects directly for 100k, because its
    local C-STORE path took 17 to 23 small instances per second on 2 busy cores.
    """
    stored = _orthanc_instance_count(orthanc)
    batch = 0
    rates: list[tuple[float, float]] = []
    while stored < total:
        count = min(FILL_STUDY_SIZE, total - stored)
        batch += 1
        study, _, paths = _write_series(
            folder / "fill", count, f"FILL{batch:06d}", f"FILL^{batch:06d}", 64
        )
        cirrus_seconds, orthanc_seconds = _send_to_both(cirrus, orthanc, paths)
        _wait_for_study(cirrus.dicomweb_url, study, count, "Cirrus")
        rates.append((count / cirrus_seconds, count / orthanc_seconds))
        stored += count
        shutil.rmtree(folder / "fill", ignore_errors=True)
    reached_orthanc = _orthanc_instance_count(orthanc)
    reached_cirrus = _cirrus_instance_count(cirrus)
    if reached_cirrus != reached_orthanc:
        raise RuntimeError(
            f"after the fill Cirrus lists {reached_cirrus} instances and Orthanc "
            f"{reached_orthanc}; both must hold the same studies"
        )
    if rates:
        cirrus_rate = statistics.median(rate[0] for rate in rates)
        orthanc_rate = statistics.median(rate[1] for rate in rates)
        print(
            f"fill to {reached_orthanc}: C-STORE of 64x64 instances, median "
            f"{cirrus_rate:.0f} inst/s into Cirrus, {orthanc_rate:.0f} inst/s into Orthanc",
            flush=True,
        )
    return reached_orthanc


def _percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _alternate(
    cirrus_call: Callable[[], Any], orthanc_call: Callable[[], Any], runs: int, warmup: int = 1
) -> tuple[list[float], list[float], list[Any], list[Any]]:
    """Time ``runs`` calls of each after ``warmup`` untimed ones, the two taking turns.

    Returns each side's seconds and the values the calls returned.
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
        """Time GET ``path`` on both; check both return the same count; return p50 and p95."""

        def call(side: str) -> Callable[[], int]:
            return lambda: count(self.get(side, path, headers))

        cirrus, orthanc, cirrus_counts, orthanc_counts = _alternate(
            call("cirrus"), call("orthanc"), self.runs
        )
        if set(cirrus_counts) != set(orthanc_counts) or len(set(cirrus_counts)) != 1:
            raise RuntimeError(
                f"{workload}: Cirrus returned {sorted(set(cirrus_counts))} results and Orthanc "
                f"{sorted(set(orthanc_counts))}; the archives must hold the same studies"
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


def _http_workloads(reader: _Reader, target: Target) -> list[Measurement]:
    """Measure the DICOMweb workloads: QIDO, metadata, WADO-RS, frames and rendered."""
    study, series, instance = target.study_uid, target.series_uid, target.instance_uid
    series_path = f"/studies/{study}/series/{series}"
    instance_path = f"{series_path}/instances/{instance}"
    measurements = [
        *reader.latency("QIDO study search by PatientID", f"/studies?PatientID={target.patient_id}",
                        DICOM_JSON, _json_items),
        *reader.latency("QIDO study search by PatientName prefix",
                        f"/studies?PatientName={target.name_prefix}*", DICOM_JSON, _json_items,
                        "the * is sent verbatim, as Orthanc 1.10.1 does not percent-decode"),
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
    cirrus: RunningStack, orthanc: Orthanc, target: Target, stored: int, runs: int
) -> list[Measurement]:
    """Measure every read workload on both archives.

    Each workload but C-MOVE starts with one untimed request to each archive. C-MOVE moves
    the whole target study at most three times, and WADO-RS series retrieval runs at most
    five times, since each moves the whole series.
    """
    with ExitStack() as stack:
        reader = _Reader(
            cirrus.dicomweb_url,
            _orthanc_dicomweb(orthanc),
            stored,
            runs,
            stack.enter_context(requests.Session()),
            stack.enter_context(requests.Session()),
        )
        measurements = _http_workloads(reader, target)
        folder = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="cirrus-versus-read-"))
        )
        measurements.append(_find_workload(cirrus, orthanc, target, stored, runs))
        measurements.append(_move_workload(cirrus, orthanc, target, stored, runs, folder))
    return measurements


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
    args = parser.parse_args()  # fmt: skip
    reason = missing_requirement()
    if reason is not None:
        sys.exit(f"versus_read: {reason}")
    work = Path(tempfile.mkdtemp(prefix="cirrus-versus-read-"))
    try:
        with running_pair(work) as (cirrus, orthanc):
            started = time.perf_counter()
            target = load_target(cirrus, orthanc, work, args.instances)
            print(f"target loaded in {time.perf_counter() - started:.0f} s", flush=True)
            for size in args.stored:
                started = time.perf_counter()
                stored = fill(cirrus, orthanc, work, size)
                print(f"filled to {stored} in {time.perf_counter() - started:.0f} s", flush=True)
                print(f"load average: {os.getloadavg()}", flush=True)
                measurements = read_workloads(cirrus, orthanc, target, stored, args.runs)
                _print(measurements)
                print(f"load average: {os.getloadavg()}", flush=True)
                if args.output is not None:
                    append(args.output, measurements)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
