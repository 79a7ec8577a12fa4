"""C-STORE into a study under legal hold: a resend of the same bytes succeeds, a change fails."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from cirrus.audit import Actor
from cirrus.config import Settings
from cirrus.gateway.server import Gateway
from cirrus.gateway.status import LEGAL_HOLD_COMMENT, NOT_AUTHORIZED, SUCCESS
from cirrus.lifecycle.holds import LegalHolds
from cirrus.services import Services
from cirrus.storage.objects import ObjectStore
from tests.gateway.scu import SITE, associate, fresh_ct

OPERATOR = Actor(principal="records-officer")


def send(gateway: Gateway, ds: pydicom.Dataset) -> pydicom.Dataset:
    with associate(gateway.port, [(ds.SOPClassUID, ExplicitVRLittleEndian)]) as assoc:
        status = assoc.send_c_store(ds)
    return status


def test_held_instance_not_replaced(
    gateway: Gateway, gateway_settings: Settings, archive: ObjectStore, tmp_path: Path
) -> None:
    path, key = fresh_ct(tmp_path)
    ds = pydicom.dcmread(path)
    assert send(gateway, ds).Status == SUCCESS
    original = archive.get(key)
    audit = Services(gateway_settings).audit
    LegalHolds(archive).set(SITE, ds.StudyInstanceUID, "litigation", OPERATOR, audit)

    assert send(gateway, ds).Status == SUCCESS
    assert archive.get(key) == original

    ds.SeriesDescription = "changed after the hold"
    status = send(gateway, ds)
    assert status.Status == NOT_AUTHORIZED
    assert status.ErrorComment == LEGAL_HOLD_COMMENT
    assert archive.get(key) == original


def test_new_instance_of_held_study_stored(
    gateway: Gateway, gateway_settings: Settings, archive: ObjectStore, tmp_path: Path
) -> None:
    path, _ = fresh_ct(tmp_path)
    ds = pydicom.dcmread(path)
    audit = Services(gateway_settings).audit
    LegalHolds(archive).set(SITE, ds.StudyInstanceUID, "litigation", OPERATOR, audit)
    assert send(gateway, ds).Status == SUCCESS
