"""``cirrus verify``, ``reindex`` and ``redrive`` against ``cirrus dev`` in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from cirrus.local.endpoints import ENDPOINTS_FILE
from cirrus.local.stack import OBJECTS_FOLDER
from tests.e2e.conftest import start_stack
from tests.e2e.test_delete_restart import _store, _wait_for_instances
from tests.integration.test_operations import REINDEX_ZEROS, VERIFY_ZEROS
from tests.pydicom_files import bundled

pytestmark = pytest.mark.timeout(240)


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cirrus.cli", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def _json_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def _datasets(count: int) -> list[pydicom.Dataset]:
    study, series = generate_uid(), generate_uid()
    datasets: list[pydicom.Dataset] = []
    for _ in range(count):
        ds = pydicom.dcmread(bundled("CT_small.dcm"))
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        datasets.append(ds)
    return datasets


def test_operations_on_local_stack(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    datasets = _datasets(3)
    study = datasets[0].StudyInstanceUID
    stack = start_stack(data_dir)
    try:
        assert (data_dir / ENDPOINTS_FILE).is_file()
        _store(stack, datasets)
        assert len(_wait_for_instances(stack.dicomweb_url, study, 3)) == 3

        result = _cli(data_dir, "verify", "--json")
        assert result.returncode == 0, result.stderr
        assert _json_lines(result) == [
            {
                "summary": {**VERIFY_ZEROS, "objects": 3, "index entries": 3, "studies": 1},
                "differences": 0,
            }
        ]

        deleted_file = next((data_dir / OBJECTS_FOLDER).rglob(f"{datasets[0].SOPInstanceUID}.dcm"))
        deleted_file.unlink()
        result = _cli(data_dir, "verify")
        assert result.returncode == 1, result.stderr
        assert "missing object" in result.stdout
        assert datasets[0].SOPInstanceUID in result.stdout

        result = _cli(data_dir, "reindex", "--prune", "--json")
        assert result.returncode == 0, result.stderr
        assert _json_lines(result)[-1] == {
            "summary": {**REINDEX_ZEROS, "unchanged": 2, "pruned": 1},
            "complete": True,
        }
        assert len(_wait_for_instances(stack.dicomweb_url, study, 2)) == 2
        assert _cli(data_dir, "verify").returncode == 0

        result = _cli(data_dir, "redrive", "--dry-run", "--json")
        assert result.returncode == 0, result.stderr
        assert _json_lines(result) == [{"summary": {"would move": 0}, "dry_run": True}]
    finally:
        assert stack.stop() == 0
    assert not (data_dir / ENDPOINTS_FILE).exists()
    result = _cli(data_dir, "verify")
    assert result.returncode == 2
    assert f"no local stack is running on {data_dir}" in result.stderr
