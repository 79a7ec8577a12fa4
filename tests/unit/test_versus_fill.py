"""The generated fill studies of the side-by-side benchmark (bench/versus_fill.py)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom
import pytest

from bench.versus_fill import (
    Archive,
    fill_study,
    fixed_length_uid,
    instance_metadatas,
    remove_tree,
)
from cirrus.dicom.dicomjson import instance_metadata
from cirrus.dicom.instance import parse_instance
from cirrus.storage.keys import is_conformant_uid


def test_fixed_length_uids_conform() -> None:
    uids = {fixed_length_uid() for _ in range(200)}

    assert len(uids) == 200
    assert {len(uid) for uid in uids} == {44}
    assert all(is_conformant_uid(uid) for uid in uids)


def test_fill_study_instances_are_part10() -> None:
    study = fill_study(7, 5)

    assert len(study.parts) == 5
    assert len(set(study.sop_uids)) == 5
    for number, (part, uid) in enumerate(zip(study.parts, study.sop_uids, strict=True), start=1):
        ds = pydicom.dcmread(BytesIO(part))
        assert ds.file_meta.MediaStorageSOPInstanceUID == uid
        assert ds.SOPInstanceUID == uid
        assert ds.InstanceNumber == number
        assert ds.StudyInstanceUID == study.study_uid
        assert ds.SeriesInstanceUID == study.series_uid
        assert ds.PatientID == "FILL000007"
        assert str(ds.PatientName) == "FILL^000007"
        assert ds.pixel_array.shape == (64, 64)


def test_fill_studies_differ() -> None:
    first, second = fill_study(1, 2), fill_study(2, 2)

    assert first.study_uid != second.study_uid
    assert first.series_uid != second.series_uid
    assert not set(first.sop_uids) & set(second.sop_uids)


def test_metadata_equals_ingest_conversion() -> None:
    study = fill_study(3, 4)

    metadatas = [metadata for _, metadata in instance_metadatas(study)]

    assert len(metadatas) == 4
    for part, metadata in zip(study.parts, metadatas, strict=True):
        assert metadata == instance_metadata(parse_instance(part))


@pytest.mark.parametrize(
    ("archive", "text"),
    [
        (Archive(stored=1000), "all 1,000 instances sent to both by C-STORE"),
        (
            Archive(stored=100000, direct=99000, fill_studies=990),
            "99,000 of the 100,000 instances written into Cirrus directly (objects and index "
            "records, bench/versus_fill.py) and sent to Orthanc by C-STORE; the other 1,000 "
            "sent to both by C-STORE",
        ),
    ],
)
def test_archive_describes_fill(archive: Archive, text: str) -> None:
    assert archive.describe() == text


def test_remove_tree_deletes_everything(tmp_path: Path) -> None:
    root = tmp_path / "run"
    for study in range(3):
        series = root / "objects" / f"study{study}" / "series"
        series.mkdir(parents=True)
        for number in range(5):
            (series / f"{number}.dcm").write_bytes(b"x")
    (root / "top.txt").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept.txt").write_text("kept")
    (root / "link").symlink_to(outside, target_is_directory=True)

    remove_tree(root)

    assert not root.exists()
    assert (outside / "kept.txt").read_text() == "kept"


def test_remove_tree_ignores_missing_folder(tmp_path: Path) -> None:
    remove_tree(tmp_path / "missing")

    assert not (tmp_path / "missing").exists()
