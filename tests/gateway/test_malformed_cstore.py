"""Malformed instances over C-STORE, each between two valid ones in the same association.

The cases are the network subset of ``tests/malformed.py`` that a C-STORE can carry (the file
meta intact, a storage SOP class). pynetdicom sends each data set as its bytes, without
decoding it. Each case gets the status of the corpus, or is stored as sent. The valid
instances before and after it are stored, and nothing else reaches the archive.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]

from cirrus.gateway.server import Gateway
from cirrus.gateway.status import ERROR_COMMENT_MAX_LENGTH, SUCCESS
from cirrus.storage.objects import ObjectStore
from tests.gateway.scu import (
    SITE,
    associate,
    dataset_bytes,
    object_key,
    send_file_as_is,
    stored_objects,
)
from tests.malformed import STORED, MalformedInput, ci_subset, fresh_seed, network_cases

STUDY = generate_uid()
SELECTED = ci_subset([case for case in network_cases(STUDY) if case.cstore])
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.timeout(60)]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", SELECTED, ids=lambda case: case.name)
def test_malformed_cstore_status(
    gateway: Gateway,
    archive: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    case: MalformedInput,
) -> None:
    bad = write(tmp_path / "bad.dcm", case.data)
    meta = read_file_meta_info(bad)
    sop_class = str(meta.MediaStorageSOPClassUID)
    transfer_syntax = str(meta.TransferSyntaxUID)
    first = write(tmp_path / "first.dcm", fresh_seed("MR_small.dcm", STUDY).data)
    last = write(tmp_path / "last.dcm", fresh_seed("CT_small.dcm", STUDY).data)
    contexts = [
        (sop_class, transfer_syntax),
        (MRImageStorage, ExplicitVRLittleEndian),
        (CTImageStorage, ExplicitVRLittleEndian),
    ]
    before = stored_objects(archive)

    with associate(gateway.port, contexts) as assoc:
        statuses = [send_file_as_is(monkeypatch, assoc, path) for path in (first, bad, last)]

    assert statuses[0].Status == SUCCESS
    assert statuses[2].Status == SUCCESS
    status = statuses[1]
    assert status.Status == case.cstore_expected, status.get("ErrorComment")
    expected_keys = {object_key(SITE, first), object_key(SITE, last)}
    if status.Status == STORED:
        key = object_key(SITE, bad)  # pydicom reads every stored case
        expected_keys.add(key)
        stored = archive.get(key)
        assert dataset_bytes(stored) == dataset_bytes(case.data)
    else:
        assert status.ErrorComment
        assert len(status.ErrorComment) <= ERROR_COMMENT_MAX_LENGTH
    assert set(stored_objects(archive)) - set(before) == expected_keys
