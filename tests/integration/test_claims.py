"""One storage key per SOP Instance UID: the claims checked by the shared write path."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from pydicom.uid import generate_uid

from cirrus.archive import archive_instance
from cirrus.config import Settings
from cirrus.errors import ConflictError
from cirrus.services import Services
from tests.pydicom_files import bundled


def _encode(study: str, sop: str) -> bytes:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SOPInstanceUID = study, sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_same_key_stored_again(settings: Settings) -> None:
    services = Services(settings)
    study, sop = generate_uid(), generate_uid()
    first = archive_instance(services.store, "default", _encode(study, sop), claims=services.claims)
    again = archive_instance(services.store, "default", _encode(study, sop), claims=services.claims)
    assert again.key == first.key


def test_other_study_rejected(settings: Settings) -> None:
    services = Services(settings)
    study, sop = generate_uid(), generate_uid()
    archive_instance(services.store, "default", _encode(study, sop), claims=services.claims)
    with pytest.raises(ConflictError, match=f"already stored in study {study}"):
        archive_instance(
            services.store, "default", _encode(generate_uid(), sop), claims=services.claims
        )
    keys = [obj.key for obj in services.store.list_keys("sites/default/")]
    assert len(keys) == 1
    assert study in keys[0]


def test_sites_claim_separately(settings: Settings) -> None:
    services = Services(settings)
    sop = generate_uid()
    archive_instance(
        services.store, "default", _encode(generate_uid(), sop), claims=services.claims
    )
    other = archive_instance(
        services.store, "other-site", _encode(generate_uid(), sop), claims=services.claims
    )
    assert other.key.site == "other-site"
