"""``cirrus export`` and ``cirrus deidentify --from-env`` on a deployment on moto."""

from __future__ import annotations

import json
import zipfile
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from cirrus.config import Settings
from cirrus.index.claims import CLAIM, claim_pk
from cirrus.index.models import STUDY, get_record, study_pk
from cirrus.services import Services
from functions.ingest import handler as ingest_handler
from tests.integration.index_snapshot import notifications_of, queued_messages
from tests.integration.test_operations import _archive, _cli, _ingest_all


@pytest.fixture
def services(settings: Settings) -> Services:
    return Services(settings)


def test_deidentify_from_env(services: Services, tmp_path: Path) -> None:
    study = generate_uid()
    sources = _archive(services, 2, study)
    _ingest_all(services)
    queued_before = queued_messages(services)
    key_file = tmp_path / "key"
    key_file.write_text("aws-deidentification-key-0123456789")

    result = _cli(
        services.settings, "deidentify", study, "--to-site", "research",
        "--deid-key-file", str(key_file),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1] == {"summary": {"stored": 2, "failed": 0}}
    copies = [line["detail"] for line in lines[:-1]]
    assert all(key.startswith("sites/research/studies/2.25.") for key in copies)

    # The bucket notified the ingest queue of each copy, as it does for C-STORE and STOW-RS.
    assert queued_messages(services) == queued_before + 2
    s3 = services.clients.s3
    for key in copies:
        head = s3.head_object(Bucket=services.settings.bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        ds = pydicom.dcmread(BytesIO(services.store.get(key)))
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.StudyInstanceUID != study
        sop = key.rsplit("/", 1)[1].removesuffix(".dcm")
        assert get_record(services.index_model, claim_pk("research", sop), CLAIM) is not None

    records = notifications_of(services, "sites/research/")
    assert ingest_handler.handle({"Records": records}, None, services) == {"batchItemFailures": []}
    new_study = copies[0].split("/")[3]
    assert get_record(services.index_model, study_pk("research", new_study), STUDY) is not None
    for source in sources:
        assert services.store.get(source.object_key)


def test_export_zip_from_env(services: Services, tmp_path: Path) -> None:
    study = generate_uid()
    sources = _archive(services, 2, study)
    destination = tmp_path / "study.zip"
    result = _cli(services.settings, "export", study, "--to", str(destination))
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(destination) as archive:
        files = {name: archive.read(name) for name in archive.namelist() if name != "DICOMDIR"}
    assert set(files.values()) == {services.store.get(key.object_key) for key in sources}
