"""End to end: pydicom's test files sent with storescu, found with QIDO, read back with WADO.

The local stack runs as ``cirrus dev`` in a child process. Every request is real DICOM or
HTTP on 127.0.0.1, and the DICOMweb client is the dicomweb-client package.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from tests.e2e.conftest import READY_LINE, STOPPED_LINE, RunningStack, start_stack
from tests.e2e.corpus import (
    REJECTED_WITHOUT_PIXELS,
    CorpusFile,
    load_corpus,
    read_file,
    rounds,
    send_with_storescu,
)
from tests.pydicom_files import TEST_FILES

FILES, SKIPPED = load_corpus()
BY_NAME = {entry.name: entry for entry in FILES}
INGEST_TIMEOUT_SECONDS = 30


@dataclass
class Outcome:
    """What the stack returned for one file, captured before a later round replaces it."""

    storescu_output: str
    storescu_code: int
    qido: list[dict[str, Any]] = field(default_factory=list)
    retrieved: pydicom.Dataset | None = None
    metadata: dict[str, Any] | None = None
    bulk: dict[str, bytes] = field(default_factory=dict)


def _find(client: DICOMwebClient, entry: CorpusFile) -> list[dict[str, Any]]:
    deadline = time.monotonic() + INGEST_TIMEOUT_SECONDS
    while True:
        found = client.search_for_instances(
            study_instance_uid=entry.study,
            search_filters={"SOPInstanceUID": entry.sop},
            fields=["PatientID"],
        )
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _metadata_after_ingest(
    client: DICOMwebClient, entry: CorpusFile, replaced: dict[str, Any] | None
) -> dict[str, Any]:
    """Return the instance's metadata once ingest has indexed this file.

    A file that replaces one of an earlier round is in the store as soon as storescu returns,
    but its metadata changes only when ingest has indexed it, so this waits for the change.
    When both files have the same metadata, the wait ends at its deadline with the same result.
    """
    deadline = time.monotonic() + INGEST_TIMEOUT_SECONDS / 2
    while True:
        metadata: dict[str, Any] = client.retrieve_instance_metadata(
            entry.study, entry.series, entry.sop
        )
        if metadata != replaced or time.monotonic() > deadline:
            return metadata
        time.sleep(0.1)


def _bulk_uris(metadata: dict[str, Any]) -> list[str]:
    uris = []
    for attribute in metadata.values():
        if "BulkDataURI" in attribute:
            uris.append(attribute["BulkDataURI"])
        for item in attribute.get("Value", ()) if attribute.get("vr") == "SQ" else ():
            uris.extend(_bulk_uris(item))
    return uris


@pytest.fixture(scope="module")
def outcomes(local_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> dict:
    client = DICOMwebClient(url=local_stack.dicomweb_url)
    folder = tmp_path_factory.mktemp("storescu")
    results: dict[str, Outcome] = {}
    previous: dict[tuple[str, str, str], dict[str, Any]] = {}
    for batch in rounds(FILES):
        for entry in batch:
            sent = send_with_storescu(entry, local_stack.dicom_port, folder)
            results[entry.name] = Outcome(sent.stdout + sent.stderr, sent.returncode)
        for entry in batch:
            outcome = results[entry.name]
            if outcome.storescu_code != 0:
                continue
            outcome.qido = _find(client, entry)
            if not outcome.qido:
                continue
            # transfer-syntax=* requests the stored bytes; the default would decode them.
            outcome.retrieved = client.retrieve_instance(
                entry.study, entry.series, entry.sop, media_types=(("application/dicom", "*"),)
            )
            outcome.metadata = _metadata_after_ingest(client, entry, previous.get(entry.key))
            previous[entry.key] = outcome.metadata
            for uri in _bulk_uris(outcome.metadata):
                outcome.bulk[uri] = b"".join(client.retrieve_bulkdata(uri))
    return results


def test_corpus_is_large() -> None:
    assert len(FILES) >= 60


@pytest.mark.parametrize("name", sorted(SKIPPED))
def test_file_not_sent(name: str) -> None:
    """List each file that is not sent, with the reason, in the test summary."""
    pytest.skip(f"{name}: {SKIPPED[name]}")


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_file_found_by_qido(outcomes: dict[str, Outcome], name: str) -> None:
    entry = BY_NAME[name]
    outcome = outcomes[name]
    assert outcome.storescu_code == 0, outcome.storescu_output
    assert len(outcome.qido) == 1, "the instance never appeared in QIDO"
    [match] = outcome.qido
    assert match["0020000E"]["Value"] == [entry.series]
    assert match["00080016"]["Value"] == [entry.sop_class]
    assert match.get("00100020", {}).get("Value", [None])[0] == (entry.patient_id or None)
    assert match.get("00080060", {}).get("Value", [None])[0] == (entry.modality or None)


def as_sent_by_storescu(path: Path) -> pydicom.Dataset:
    """Read a file as dcmtk 3.6.7's storescu sends it.

    storescu drops Data Set Trailing Padding (FFFC,FFFC), recomputes group lengths (gggg,0000),
    pads odd-length values to even length, and gives encapsulated Pixel Data the VR OB
    (PS3.5 A.4). The archive stores what it receives, so the comparison makes the same changes
    to the file and leaves group lengths out on both sides.
    """
    ds = without_group_lengths(read_file(path))
    if 0xFFFCFFFC in ds:
        del ds[0xFFFCFFFC]
    if "PixelData" in ds:
        pixel = ds["PixelData"]
        if pixel.is_undefined_length:
            pixel.VR = "OB"
        if len(pixel.value) % 2:
            pixel.value += b"\0"
    return ds


def without_group_lengths(ds: pydicom.Dataset) -> pydicom.Dataset:
    for elem in list(ds):
        if elem.tag.element == 0:
            del ds[elem.tag]
    return ds


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_file_retrieved_equal(outcomes: dict[str, Outcome], name: str) -> None:
    original = as_sent_by_storescu(BY_NAME[name].path)
    assert outcomes[name].retrieved is not None, "not retrievable"
    retrieved = without_group_lengths(outcomes[name].retrieved)
    assert sorted(retrieved.keys()) == sorted(original.keys())
    # transfer-syntax=* sends big endian instances as Explicit VR Little Endian, so their
    # Pixel Data is compared as pixels and may have another planar configuration.
    big_endian = BY_NAME[name].transfer_syntax == ExplicitVRBigEndian
    recoded = {"PixelData", "PlanarConfiguration"} if big_endian else set()
    different = [
        f"{elem.tag} {elem.keyword}"
        for elem in original
        if elem.keyword not in recoded and retrieved[elem.tag] != elem
    ]
    assert not different, f"elements differ: {different}"
    if big_endian:
        assert retrieved.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    if big_endian and "PixelData" in original:
        assert numpy.array_equal(retrieved.pixel_array, original.pixel_array)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_file_metadata_matches_pydicom(outcomes: dict[str, Outcome], name: str) -> None:
    outcome = outcomes[name]
    assert outcome.metadata is not None, "no metadata"
    original = as_sent_by_storescu(BY_NAME[name].path)
    try:
        expected = original.to_json_dict()
    except Exception as exc:  # pydicom raises what the value's conversion raises
        pytest.skip(f"pydicom cannot convert the file to DICOM JSON ({type(exc).__name__})")
    ours = {tag: value for tag, value in outcome.metadata.items() if not tag.endswith("0000")}
    differences = _compare_json(ours, expected, outcome.bulk, path="")
    assert not differences, "\n".join(differences)


def _compare_json(
    ours: dict[str, Any], expected: dict[str, Any], bulk: dict[str, bytes], path: str
) -> list[str]:
    """List the differences, taking a BulkDataURI as equal to the InlineBinary it serves."""
    differences = []
    for tag in sorted(set(ours) | set(expected)):
        where = f"{path}{tag}"
        mine, theirs = ours.get(tag), expected.get(tag)
        if mine is None or theirs is None:
            differences.append(f"{where}: only in {'ours' if theirs is None else 'pydicom'}")
        elif "BulkDataURI" in mine:
            inline = base64.b64decode(theirs.get("InlineBinary", ""))
            if bulk.get(mine["BulkDataURI"]) != inline:
                differences.append(f"{where}: bulk data differs from pydicom's InlineBinary")
            if mine["vr"] != theirs["vr"]:
                differences.append(f"{where}: VR {mine['vr']} != {theirs['vr']}")
        elif mine.get("vr") == "SQ" and theirs.get("vr") == "SQ":
            items, their_items = mine.get("Value", []), theirs.get("Value", [])
            if len(items) != len(their_items):
                differences.append(f"{where}: {len(items)} items != {len(their_items)}")
            for index, (item, their_item) in enumerate(zip(items, their_items, strict=False)):
                differences += _compare_json(item, their_item, bulk, f"{where}/{index}/")
        elif mine != theirs:
            differences.append(f"{where}: {mine!r} != {theirs!r}")
    return differences


def test_image_without_pixels_rejected(local_stack: RunningStack, tmp_path: Path) -> None:
    names = [name for name, reason in SKIPPED.items() if reason == REJECTED_WITHOUT_PIXELS]
    assert names, "the corpus has no image without Pixel Data any more"
    path = TEST_FILES / names[0]
    ds = pydicom.dcmread(path)
    entry = CorpusFile(
        path=path,
        study=ds.StudyInstanceUID,
        series=ds.SeriesInstanceUID,
        sop=ds.SOPInstanceUID,
        sop_class=ds.SOPClassUID,
        transfer_syntax=ds.file_meta.TransferSyntaxUID,
        patient_id=ds.get("PatientID"),
        modality=ds.get("Modality"),
    )
    sent = send_with_storescu(entry, local_stack.dicom_port, tmp_path)
    assert sent.returncode != 0
    client = DICOMwebClient(url=local_stack.dicomweb_url)
    found = client.search_for_instances(
        study_instance_uid=entry.study, search_filters={"SOPInstanceUID": entry.sop}
    )
    assert found == []


def test_restart_keeps_everything(
    local_stack: RunningStack, outcomes: dict[str, Outcome], tmp_path: Path
) -> None:
    client = DICOMwebClient(url=local_stack.dicomweb_url)
    before = sorted(s["0020000D"]["Value"][0] for s in client.search_for_studies())
    assert local_stack.stop() == 0
    local_stack.wait_for_line(STOPPED_LINE, timeout=5)

    restarted = start_stack(local_stack.data_dir)
    try:
        restarted.wait_for_line(READY_LINE)
        restarted_client = DICOMwebClient(url=restarted.dicomweb_url)
        after = sorted(s["0020000D"]["Value"][0] for s in restarted_client.search_for_studies())
        assert after == before
        instances = restarted_client.search_for_instances()
        assert len(instances) == len({entry.key for entry in FILES})
    finally:
        assert restarted.stop() == 0
