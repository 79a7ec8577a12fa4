"""Object tags that the gateway sets on each instance it stores, for S3 lifecycle rules."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from cirrus.gateway.server import Gateway
from cirrus.gateway.status import SUCCESS
from cirrus.storage.objects import SINGLE_PUT_MAX_BYTES, ObjectStore
from tests.gateway.scu import (
    SITE,
    associate,
    fresh_ct,
    object_key,
    send_file_as_is,
    storescu,
)
from tests.gateway.test_large import write_large_instance


def test_storescu_instance_tagged(gateway: Gateway, archive: ObjectStore, tmp_path: Path) -> None:
    path, key = fresh_ct(tmp_path)
    storescu(gateway.port, path)
    assert key == object_key(SITE, path)
    assert archive.tags(key) == {"site": SITE, "modality": "CT"}


def test_multipart_instance_tagged(
    gateway: Gateway, archive: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "medium.dcm"
    key = write_large_instance(path, SINGLE_PUT_MAX_BYTES)
    ds = pydicom.dcmread(path, stop_before_pixels=True)

    with associate(gateway.port, [(ds.SOPClassUID, ExplicitVRLittleEndian)]) as assoc:
        status = send_file_as_is(monkeypatch, assoc, path)

    assert status.Status == SUCCESS
    (stored,) = [obj for obj in archive.list_keys(key) if obj.key == key]
    assert stored.etag.endswith("-2")
    assert archive.tags(key) == {"site": SITE, "modality": "OT"}
