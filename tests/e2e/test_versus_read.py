"""The side-by-side read workloads (bench/versus_read.py) against ``cirrus dev`` and Orthanc.

A 10-instance target study is loaded into both and every workload runs twice, so the test
checks that each workload returns figures for both archives and that both returned the same
results. A direct fill of Cirrus (bench/versus_fill.py) then adds two studies, and the study
searches run again. It asserts no timing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.versus_fill import Archive
from bench.versus_read import fill, load_target, read_workloads, running_pair
from tests.peers.orthanc import require_dicomweb_plugin

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

INSTANCES = 10
EXPECTED_WORKLOADS = {
    "QIDO study search by PatientID, p50",
    "QIDO study search by PatientID, p95",
    "QIDO study search by PatientName prefix, p50",
    "QIDO study search by PatientName prefix, p95",
    "QIDO series of the study, p50",
    "QIDO series of the study, p95",
    f"QIDO instances of the {INSTANCES}-instance series, p50",
    f"QIDO instances of the {INSTANCES}-instance series, p95",
    "series metadata, gzip, p50",
    "series metadata, gzip, p95",
    "series metadata, identity, p50",
    "series metadata, identity, p95",
    "frame 1 of an instance, p50",
    "frame 1 of an instance, p95",
    "rendered thumbnail (viewport=128,128), p50",
    "rendered thumbnail (viewport=128,128), p95",
    "WADO-RS series retrieve",
    "C-FIND study by PatientID, p50",
    "C-MOVE of the study",
}
SEARCH_WORKLOADS = {
    "QIDO study search by PatientID, p50",
    "QIDO study search by PatientID, p95",
    "QIDO study search by PatientName prefix, p50",
    "QIDO study search by PatientName prefix, p95",
    "C-FIND study by PatientID, p50",
}
# One whole fill study and part of another.
DIRECT = 130


def test_read_workloads_measure_both(tmp_path: Path) -> None:
    require_dicomweb_plugin()
    for tool in ("storescu", "storescp", "findscu", "movescu"):
        if shutil.which(tool) is None:
            pytest.skip(f"dcmtk's {tool} is not installed (run scripts/system-deps test)")
    with running_pair(tmp_path) as (cirrus, orthanc):
        target = load_target(cirrus, orthanc, tmp_path, INSTANCES)
        archive = fill(cirrus, orthanc, tmp_path, Archive(INSTANCES), INSTANCES + 5)
        measurements = read_workloads(cirrus, orthanc, target, archive, runs=2)
        filled = fill(cirrus, orthanc, tmp_path, archive, archive.stored + DIRECT, direct=True)
        searches = read_workloads(cirrus, orthanc, target, filled, runs=2, searches_only=True)

    assert archive == Archive(stored=INSTANCES + 5, direct=0, fill_studies=1)
    assert {measurement.workload for measurement in measurements} == EXPECTED_WORKLOADS
    for measurement in measurements:
        assert measurement.cirrus is not None and measurement.cirrus > 0, measurement
        assert measurement.peer_value is not None and measurement.peer_value > 0, measurement
        assert measurement.peer == "Orthanc"
        assert measurement.stored == archive.stored
        assert "sent to both by C-STORE" in measurement.note

    assert filled == Archive(stored=INSTANCES + 5 + DIRECT, direct=DIRECT, fill_studies=3)
    assert {measurement.workload for measurement in searches} == SEARCH_WORKLOADS
    for measurement in searches:
        assert measurement.cirrus is not None and measurement.cirrus > 0, measurement
        assert measurement.peer_value is not None and measurement.peer_value > 0, measurement
        assert measurement.stored == filled.stored
        assert f"{DIRECT} of the {filled.stored} instances written into Cirrus directly" in (
            measurement.note
        )
