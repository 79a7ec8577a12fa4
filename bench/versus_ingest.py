"""The ingest workloads of ``bench/versus.py``: C-STORE, STOW-RS and time to visible in QIDO.

Each repetition generates a new series (bench/cstore.py's 512x512x16-bit CT generator) and
sends the same files to Orthanc, then to ``cirrus dev``. An ingest run ends when every
instance is acknowledged and a query finds all of them. Orthanc indexes an instance before
it acknowledges it, so its query succeeds at once. Cirrus indexes from the ingest queue
after the acknowledgement, so its run also waits for QIDO. Every figure is the median over
the repetitions, returned as ``bench.results.Measurement`` records.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import requests
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from bench.cstore import synthetic_ct, synthetic_series
from bench.gateway_ingest import NAGLE, NODELAY, cirrus_count, measure, orthanc_count, wait_visible
from bench.results import Measurement
from cirrus.dicomweb.multipart import Part, build_multipart_related
from tests.e2e.conftest import RunningStack
from tests.peers.orthanc import DICOMWEB_ROOT, Orthanc

STOW_BATCH = 50
STOW_IN_FLIGHT = 4
# The local HTTP server, like API Gateway and Lambda, rejects a request body over 10,000,000
# bytes and an event over 6,000,000 bytes, and a binary body grows by a third in base64.
DIRECT_STOW_MAX_BYTES = 4_000_000
CIRRUS_AE_TITLE = "CIRRUS"
# Seconds that a new instance may take to become visible before its trial fails.
VISIBLE_TRIAL_TIMEOUT_SECONDS = 120.0

# Workload names, which the targets of bench/versus_report.py match by their start.
CSTORE = "C-STORE, {} association{}"
CSTORE_ACK = "C-STORE acknowledged, {} association{}"
CSTORE_NAGLE = "C-STORE, 1 association, client with Nagle"
STOW = f"STOW-RS, {STOW_BATCH} per request, {STOW_IN_FLIGHT} in flight"
VISIBLE_P50 = "C-STORE to visible in QIDO, p50"
VISIBLE_P95 = "C-STORE to visible in QIDO, p95"


@dataclass(frozen=True)
class Peers:
    """The two archives under test, and what served Cirrus (for ``Measurement.backend``)."""

    cirrus: RunningStack
    orthanc: Orthanc
    backend: str

    @property
    def cirrus_dicomweb(self) -> str:
        return self.cirrus.dicomweb_url

    @property
    def orthanc_dicomweb(self) -> str:
        return self.orthanc.url + DICOMWEB_ROOT.rstrip("/")


def cstore_name(template: str, associations: int) -> str:
    return template.format(associations, "" if associations == 1 else "s")


def ingest_workloads(
    peers: Peers, folder: Path, instances: int, repeat: int, trials: int
) -> Iterator[list[Measurement]]:
    """Run the C-STORE and STOW-RS workloads ``repeat`` times, then the time to visible.

    Yields the figures of each workload as soon as it ends, so that the caller can record
    them before the next one starts.
    """
    yield cstore_workloads(peers, folder, instances, repeat)
    yield [stow_workload(peers, folder, instances, repeat)]
    yield visible_workload(peers, trials)


@contextmanager
def fresh_series(folder: Path, instances: int, label: str) -> Iterator[tuple[str, list[Path]]]:
    """Generate a new series of ``instances`` into ``folder``; delete its files afterwards."""
    study, paths = synthetic_series(folder, instances, label)
    try:
        yield study, paths
    finally:
        for path in paths:
            path.unlink(missing_ok=True)


def cstore_workloads(peers: Peers, folder: Path, instances: int, repeat: int) -> list[Measurement]:
    """storescu over 1 and 4 associations to both, and once to Cirrus with Nagle on."""
    visible: dict[str, list[float]] = {}
    acknowledged: dict[str, list[float]] = {}

    def record(name: str, acked: float, seen: float) -> None:
        acknowledged.setdefault(name, []).append(instances / acked)
        visible.setdefault(name, []).append(instances / seen)

    for run in range(repeat):
        print(f"C-STORE, run {run + 1} of {repeat}", flush=True)
        for associations in (1, 4):
            with fresh_series(folder, instances, f"VERSUS{run}{associations}") as (study, paths):
                series = _series_uid(paths)
                timing = measure(
                    peers.orthanc.dicom_port,
                    peers.orthanc.ae_title,
                    paths,
                    associations,
                    NODELAY,
                    orthanc_count(peers.orthanc, series),
                )
                record(f"orthanc {associations}", timing.acknowledged, timing.visible)
                timing = measure(
                    peers.cirrus.dicom_port,
                    CIRRUS_AE_TITLE,
                    paths,
                    associations,
                    NODELAY,
                    cirrus_count(peers.cirrus, study),
                )
                record(f"cirrus {associations}", timing.acknowledged, timing.visible)
        with fresh_series(folder, instances, f"VERSUS{run}NAGLE") as (study, paths):
            timing = measure(
                peers.cirrus.dicom_port,
                CIRRUS_AE_TITLE,
                paths,
                1,
                NAGLE,
                cirrus_count(peers.cirrus, study),
            )
            record("cirrus nagle", timing.acknowledged, timing.visible)

    note = f"{instances} instances per run, median of {repeat}"
    measurements = []
    for associations in (1, 4):
        for template, rates in ((CSTORE, visible), (CSTORE_ACK, acknowledged)):
            measurements.append(
                Measurement(
                    workload=cstore_name(template, associations),
                    unit="inst/s",
                    cirrus=statistics.median(rates[f"cirrus {associations}"]),
                    peer="Orthanc",
                    peer_value=statistics.median(rates[f"orthanc {associations}"]),
                    higher_is_better=True,
                    backend=peers.backend,
                    note=note,
                )
            )
    measurements.append(
        Measurement(
            workload=CSTORE_NAGLE,
            unit="inst/s",
            cirrus=statistics.median(visible["cirrus nagle"]),
            peer="Orthanc",
            peer_value=None,
            higher_is_better=True,
            backend=peers.backend,
            note=f"{note}; Cirrus only, the client leaves TCP_NODELAY unset",
        )
    )
    return measurements


def stow_workload(peers: Peers, folder: Path, instances: int, repeat: int) -> Measurement:
    """STOW-RS POSTs of ``STOW_BATCH`` instances, ``STOW_IN_FLIGHT`` at a time, to both."""
    rates: dict[str, list[float]] = {"orthanc": [], "cirrus": []}
    for run in range(repeat):
        print(f"STOW-RS, run {run + 1} of {repeat}", flush=True)
        with fresh_series(folder, instances, f"VERSUSSTOW{run}") as (study, paths):
            series = _series_uid(paths)
            seconds = stow(peers.orthanc_dicomweb, paths)
            seconds += wait_visible(orthanc_count(peers.orthanc, series), len(paths))
            rates["orthanc"].append(instances / seconds)
            seconds = stow(peers.cirrus_dicomweb, paths, through_uploads=True)
            seconds += wait_visible(cirrus_count(peers.cirrus, study), len(paths))
            rates["cirrus"].append(instances / seconds)
    return Measurement(
        workload=STOW,
        unit="inst/s",
        cirrus=statistics.median(rates["cirrus"]),
        peer="Orthanc",
        peer_value=statistics.median(rates["orthanc"]),
        higher_is_better=True,
        backend=peers.backend,
        note=f"{instances} instances per run, median of {repeat}; Cirrus receives each body "
        "over 4 MB through POST /dicomweb/uploads, a PUT of the body and "
        "POST /uploads/{id}/studies",
    )


def stow(base_url: str, paths: list[Path], through_uploads: bool = False) -> float:
    """POST ``paths`` to ``{base_url}/studies`` in batches; return the seconds it took.

    Reading the files and building each body counts in the time, as a client would do both.
    With ``through_uploads``, a body over ``DIRECT_STOW_MAX_BYTES`` goes through Cirrus's
    ``POST /uploads``, the path for bodies larger than API Gateway accepts.
    """
    batches = [paths[start : start + STOW_BATCH] for start in range(0, len(paths), STOW_BATCH)]
    started = time.perf_counter()
    with requests.Session() as session, ThreadPoolExecutor(STOW_IN_FLIGHT) as pool:
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=STOW_IN_FLIGHT)
        session.mount("http://", adapter)
        for _ in pool.map(
            lambda batch: _post_batch(session, base_url, batch, through_uploads), batches
        ):
            pass
    return time.perf_counter() - started


def _post_batch(
    session: requests.Session, base_url: str, batch: list[Path], through_uploads: bool
) -> None:
    parts = [Part(path.read_bytes(), "application/dicom") for path in batch]
    body, content_type = build_multipart_related(parts, "application/dicom")
    headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
    if through_uploads and len(body) > DIRECT_STOW_MAX_BYTES:
        ticket = _checked(session.post(base_url + "/uploads", timeout=60), 201).json()
        _checked(session.put(ticket["uploadUrl"], data=body, timeout=600), 200)
        response = session.post(ticket["storeUrl"], headers=headers, timeout=600)
    else:
        response = session.post(base_url + "/studies", data=body, headers=headers, timeout=600)
    _checked(response, 200)


def _checked(response: requests.Response, expected: int) -> requests.Response:
    if response.status_code != expected:
        raise RuntimeError(
            f"{response.request.method} {response.url} returned {response.status_code}, "
            f"expected {expected}: {response.text[:500]}"
        )
    return response


def visible_workload(peers: Peers, trials: int) -> list[Measurement]:
    """Time from each C-STORE response to the first QIDO that finds the instance.

    One pynetdicom association per archive, a fresh study per trial, polled with no pause
    between queries. Percentiles are nearest-rank over ``trials``.
    """
    print(f"C-STORE to visible in QIDO, {trials} trials on each archive", flush=True)
    orthanc = _visible_times(
        peers.orthanc.dicom_port, peers.orthanc.ae_title, peers.orthanc_dicomweb, trials
    )
    cirrus = _visible_times(peers.cirrus.dicom_port, CIRRUS_AE_TITLE, peers.cirrus_dicomweb, trials)
    note = f"{trials} trials, one association, polling /studies/{{study}}/instances?SOPInstanceUID="
    return [
        Measurement(
            workload=name,
            unit="ms",
            cirrus=nearest_rank(cirrus, percent),
            peer="Orthanc",
            peer_value=nearest_rank(orthanc, percent),
            higher_is_better=False,
            backend=peers.backend,
            note=note,
        )
        for name, percent in ((VISIBLE_P50, 50), (VISIBLE_P95, 95))
    ]


def nearest_rank(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    rank = max(1, int(np.ceil(percent / 100 * len(ordered))))
    return ordered[rank - 1]


def _visible_times(port: int, ae_title: str, qido_url: str, trials: int) -> list[float]:
    ae = AE(ae_title="VERSUS")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        raise RuntimeError(f"association with {ae_title} on port {port} was not established")
    pixels = np.random.default_rng(2).integers(-1000, 2000, size=(512, 512), dtype=np.int16)
    times = []
    try:
        with requests.Session() as session:
            for trial in range(trials):
                ds = synthetic_ct(
                    generate_uid(), generate_uid(), generate_uid(), 1, f"VISIBLE{trial}", pixels
                )
                status = assoc.send_c_store(ds)
                acknowledged = time.perf_counter()
                if status.get("Status") != 0:
                    raise RuntimeError(f"C-STORE to {ae_title} returned status {status}")
                _poll_until_found(session, qido_url, ds.StudyInstanceUID, ds.SOPInstanceUID)
                times.append((time.perf_counter() - acknowledged) * 1000)
    finally:
        assoc.release()
    return times


def _poll_until_found(session: requests.Session, qido_url: str, study: str, uid: str) -> None:
    deadline = time.perf_counter() + VISIBLE_TRIAL_TIMEOUT_SECONDS
    # NOTE: the search is scoped to the study because Cirrus has no index of SOP Instance UIDs:
    # /instances?SOPInstanceUID= reads at most 2,000 instances (UNINDEXED_READ_LIMIT) and does
    # not find a new instance in a larger archive. The UIDs go into the URL verbatim, because
    # Orthanc 1.10.1 does not percent-decode query values.
    url = f"{qido_url}/studies/{study}/instances?SOPInstanceUID={uid}"
    while time.perf_counter() < deadline:
        response = session.get(url, headers={"Accept": "application/dicom+json"}, timeout=30)
        if response.status_code == 200 and response.json():
            return
    raise RuntimeError(
        f"instance {uid} not visible at {qido_url} after {VISIBLE_TRIAL_TIMEOUT_SECONDS:g} s"
    )


def _series_uid(paths: list[Path]) -> str:
    return str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
