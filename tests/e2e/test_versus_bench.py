"""``bench/versus.py --only ingest`` against Orthanc and ``cirrus dev``, with a few instances."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import results
from bench.versus_ingest import (
    CSTORE,
    CSTORE_ACK,
    CSTORE_NAGLE,
    STOW,
    VISIBLE_P50,
    VISIBLE_P95,
    cstore_name,
)
from bench.versus_plots import INGEST_PLOT
from tests.peers.orthanc import require_dicomweb_plugin

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BOTH_SIDES = [
    *(cstore_name(template, count) for template in (CSTORE, CSTORE_ACK) for count in (1, 4)),
    STOW,
    VISIBLE_P50,
    VISIBLE_P95,
]


@pytest.fixture(scope="module")
def ingest_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """Run the ingest part once; return the results file, the images folder and the output.

    10 instances make a STOW-RS body of 5 MB, which Cirrus receives through POST /uploads.
    """
    require_dicomweb_plugin()
    folder = tmp_path_factory.mktemp("versus")
    out, images = folder / "versus.jsonl", folder / "images"
    command = [
        sys.executable, str(ROOT / "bench" / "versus.py"), "--only", "ingest",
        "--instances", "10", "--repeat", "1", "--trials", "3",
        "--out", str(out), "--report", str(images),
    ]  # fmt: skip
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=280, cwd=folder, env={**os.environ}
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    return out, images, finished.stdout


def test_every_ingest_workload_recorded(ingest_run: tuple[Path, Path, str]) -> None:
    out, _, _ = ingest_run
    recorded = {measurement.workload: measurement for measurement in results.load(out)}
    assert sorted(recorded) == sorted([*BOTH_SIDES, CSTORE_NAGLE])
    for workload in BOTH_SIDES:
        measurement = recorded[workload]
        assert measurement.cirrus is not None and measurement.cirrus > 0, workload
        assert measurement.peer == "Orthanc", workload
        assert measurement.peer_value is not None and measurement.peer_value > 0, workload
        assert "objects as files" in measurement.backend, workload
        assert "load average" in measurement.note, workload


def test_nagle_row_is_cirrus_only(ingest_run: tuple[Path, Path, str]) -> None:
    out, _, _ = ingest_run
    nagle = next(m for m in results.load(out) if m.workload == CSTORE_NAGLE)
    assert nagle.cirrus is not None and nagle.cirrus > 0
    assert nagle.peer_value is None


def test_report_folder_has_ingest_plot(ingest_run: tuple[Path, Path, str]) -> None:
    _, images, output = ingest_run
    plot = images / INGEST_PLOT
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    assert f"wrote {plot}" in output


def test_table_printed_with_targets(ingest_run: tuple[Path, Path, str]) -> None:
    _, _, output = ingest_run
    assert "Orthanc 1." in output
    for workload in BOTH_SIDES:
        assert workload in output
    assert "<= 250 ms" in output
