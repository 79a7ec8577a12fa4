"""``cirrus stats``, ``hold``, ``retention`` and ``dev --lifecycle-rules`` on ``cirrus dev``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from cirrus.local.endpoints import read_endpoints
from tests.e2e.conftest import RunningStack, start_stack
from tests.e2e.test_delete_restart import _store, _wait_for_instances
from tests.pydicom_files import bundled

pytestmark = pytest.mark.timeout(300)

SITE = "default"
RULES = {
    "rules": [
        {
            "site": SITE,
            "modality": "CT",
            "transitions": [{"days": 30, "storage_class": "STANDARD_IA"}],
            "retain_years": 10,
        },
        {"site": SITE, "modality": "MR", "retain_days": 30},
    ]
}


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cirrus.cli", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def _deleted_events(data_dir: Path, expected: int, timeout: float = 60) -> list[dict[str, Any]]:
    """Return the InstanceDeleted events of the journal once there are ``expected`` of them."""
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = _cli(data_dir, "events", "--json", "--type", "InstanceDeleted")
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines()]
        if len(events) >= expected:
            return events
        time.sleep(0.5)
    return events


def _study(name: str, study_date: str, series_sizes: list[int]) -> list[pydicom.Dataset]:
    study = generate_uid()
    datasets = []
    for count in series_sizes:
        series = generate_uid()
        for _ in range(count):
            ds = pydicom.dcmread(bundled(name))
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.StudyDate = study_date
            datasets.append(ds)
    return datasets


def _stored_bytes(stack: RunningStack, datasets: list[pydicom.Dataset]) -> int:
    # _store writes each instance beside the data folder before it sends it.
    return sum(
        (stack.data_dir.parent / f"{ds.SOPInstanceUID}.dcm").stat().st_size for ds in datasets
    )


def _stats(data_dir: Path, *options: str) -> dict[str, Any]:
    result = _cli(data_dir, "stats", "--json", *options)
    assert result.returncode == 0, result.stderr
    groups: dict[str, Any] = json.loads(result.stdout)["groups"]
    return groups


def _counts(studies: int, series: int, instances: int, size: int) -> dict[str, int]:
    return {"studies": studies, "series": series, "instances": instances, "bytes": size}


def _delete_status(stack: RunningStack, study: str) -> int:
    return requests.delete(f"{stack.dicomweb_url}/studies/{study}", timeout=30).status_code


def test_lifecycle_commands_on_local_stack(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps(RULES))
    expired_ct = _study("CT_small.dcm", "20100104", [2, 1])
    recent_ct = _study("CT_small.dcm", "20260101", [1])
    expired_mr = _study("MR_small.dcm", "20260101", [2])
    held = expired_mr[0].StudyInstanceUID
    stack = start_stack(data_dir, "--lifecycle-rules", str(rules_file))
    try:
        for datasets in (expired_ct, recent_ct, expired_mr):
            _store(stack, datasets)
            study = datasets[0].StudyInstanceUID
            assert len(_wait_for_instances(stack.dicomweb_url, study, len(datasets))) == len(
                datasets
            )
        ct_bytes = _stored_bytes(stack, expired_ct), _stored_bytes(stack, recent_ct)
        mr_bytes = _stored_bytes(stack, expired_mr)

        # Statistics, read from the index, match what was stored.
        assert _stats(data_dir) == {SITE: _counts(3, 4, 6, sum(ct_bytes) + mr_bytes)}
        assert _stats(data_dir, "--by", "modality") == {
            "CT": _counts(2, 3, 4, sum(ct_bytes)),
            "MR": _counts(1, 1, 2, mr_bytes),
        }
        assert _stats(data_dir, "--by", "day") == {
            "2010-01-04": _counts(1, 2, 3, ct_bytes[0]),
            "2026-01-01": _counts(2, 2, 3, ct_bytes[1] + mr_bytes),
        }
        assert _stats(data_dir, "--since", "2020-01-01", "--site", SITE) == {
            SITE: _counts(2, 2, 3, ct_bytes[1] + mr_bytes)
        }
        table = _cli(data_dir, "stats", "--by", "modality")
        assert table.returncode == 0, table.stderr
        assert "CT" in table.stdout
        assert "MR" in table.stdout

        # The rules file's tiering is on moto's bucket.
        settings = read_endpoints(data_dir).settings
        s3 = boto3.client("s3", endpoint_url=settings.endpoint_url, region_name="us-east-1")
        rules = s3.get_bucket_lifecycle_configuration(Bucket=settings.bucket)["Rules"]
        assert "tier-default-CT" in {rule["ID"] for rule in rules}

        # A hold blocks DELETE and retention.
        result = _cli(data_dir, "hold", "set", held, "--site", SITE, "--reason", "case 7")
        assert result.returncode == 0, result.stderr
        result = _cli(data_dir, "hold", "set", held, "--site", SITE, "--reason", "again")
        assert result.returncode == 1
        assert "already" in result.stderr
        listed = _cli(data_dir, "hold", "list", "--site", SITE, "--json")
        assert listed.returncode == 0, listed.stderr
        (hold,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert hold["study"] == held
        assert hold["reason"] == "case 7"
        assert hold["held_by"].startswith("local user ")
        assert _delete_status(stack, held) == 409

        dry = _cli(
            data_dir, "retention", "apply", "--rules", str(rules_file), "--dry-run", "--json"
        )
        assert dry.returncode == 0, dry.stderr
        *findings, summary = [json.loads(line) for line in dry.stdout.splitlines()]
        assert {(f["study"], f["outcome"]) for f in findings} == {
            (expired_ct[0].StudyInstanceUID, "would delete"),
            (held, "held"),
        }
        assert summary["summary"]["would delete"] == 1
        assert _stats(data_dir)[SITE]["studies"] == 3

        applied = _cli(data_dir, "retention", "apply", "--rules", str(rules_file), "--json")
        assert applied.returncode == 0, applied.stderr
        *findings, summary = [json.loads(line) for line in applied.stdout.splitlines()]
        (deleted,) = [f for f in findings if f["outcome"] == "deleted"]
        assert deleted["study"] == expired_ct[0].StudyInstanceUID
        assert deleted["instances"] == 3
        assert summary["summary"]["deleted"] == 1
        # Retention deletes reach the change feed and the events, as a DELETE does.
        expired_sops = sorted(ds.SOPInstanceUID for ds in expired_ct)
        changes = _cli(data_dir, "changes", "--json", "--since", "0")
        assert changes.returncode == 0, changes.stderr
        deleted_changes = [
            change
            for change in map(json.loads, changes.stdout.splitlines())
            if change["action"] == "deleted"
        ]
        assert sorted(c["SOPInstanceUID"] for c in deleted_changes) == expired_sops
        events = _deleted_events(data_dir, len(expired_sops))
        assert sorted(e["detail"]["SOPInstanceUID"] for e in events) == expired_sops
        assert _stats(data_dir) == {SITE: _counts(2, 2, 3, ct_bytes[1] + mr_bytes)}
        audit = _cli(data_dir, "audit", "--study", expired_ct[0].StudyInstanceUID, "--json")
        assert audit.returncode == 0, audit.stderr
        assert '"delete"' in audit.stdout
        assert "cirrus-retention" in audit.stdout
    finally:
        assert stack.stop() == 0

    # The hold and its audit record are in the data folder, so a restart keeps them.
    stack = start_stack(data_dir)
    try:
        assert len(_wait_for_instances(stack.dicomweb_url, held, 2)) == 2
        assert _delete_status(stack, held) == 409
        audit = _cli(data_dir, "audit", "--study", held, "--json")
        assert '"hold"' in audit.stdout
        result = _cli(data_dir, "hold", "release", held, "--site", SITE, "--reason", "closed")
        assert result.returncode == 0, result.stderr
        result = _cli(data_dir, "hold", "release", held, "--site", SITE, "--reason", "closed")
        assert result.returncode == 1
        assert _delete_status(stack, held) == 204
    finally:
        assert stack.stop() == 0


def test_invalid_lifecycle_rules_stop_dev(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(
        json.dumps(
            {"rules": [{"site": SITE, "transitions": [{"days": 1, "storage_class": "GLACIER"}]}]}
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "cirrus.cli", "dev", "--data-dir", str(tmp_path / "data"),
         "--lifecycle-rules", str(rules_file), "--http-port", "0", "--dicom-port", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "GLACIER is rejected" in result.stdout + result.stderr


def test_commands_without_stack_exit_2(tmp_path: Path) -> None:
    for args in (
        ("stats",),
        ("hold", "list", "--site", SITE),
        ("hold", "set", "1.2.3", "--site", SITE, "--reason", "x"),
    ):
        result = _cli(tmp_path, *args)
        assert result.returncode == 2, args
        assert "cirrus dev" in result.stderr or "no local stack" in result.stderr.lower(), args
