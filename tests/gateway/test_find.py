"""The C-FIND SCP with pynetdicom as SCU: levels, matching, return keys, statuses, cancel."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pynetdicom.association
import pytest
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from cirrus.config import DEFAULT_AE_TITLE, ResourceNames, Settings
from cirrus.gateway import find as find_module
from cirrus.gateway.aeconfig import AEConfig, SiteAEs
from cirrus.index.models import IndexRecord, get_record, study_pk
from cirrus.local.moto_process import LOOPBACK, MotoProcess
from cirrus.query import qido
from cirrus.query.identifier import PATIENT_ROOT_FIND, STUDY_ROOT_FIND, response_identifier
from cirrus.services import Services
from tests.gateway.find_archive import (
    LoadedStudy,
    association,
    find,
    identifier,
    load_studies,
    matches,
)
from tests.gateway.gateways import start_gateway

SITE = "find-main"
DAMAGED_SITE = "find-damaged"
CONFIG = AEConfig(
    open=True,
    default_site=SITE,
    sites={
        SITE: SiteAEs(callers={"STOREONLY": frozenset({"store"})}),
        "find-other": SiteAEs(callers={"OTHERSITE": frozenset({"query"})}),
        DAMAGED_SITE: SiteAEs(callers={"DAMAGED": frozenset({"query"})}),
    },
)

Loaded = tuple[int, list[LoadedStudy]]


@pytest.fixture(scope="module")
def loaded(gateway_settings: Settings) -> Iterator[Loaded]:
    studies = load_studies(Services(gateway_settings), SITE)
    with start_gateway(gateway_settings, config=CONFIG) as gateway:
        yield gateway.port, studies


def _values(found: list[Dataset], keyword: str) -> list[Any]:
    return [found_ds.get(keyword) for found_ds in found]


def _final(responses: list[tuple[Dataset, Dataset | None]]) -> Dataset:
    return responses[-1][0]


def test_study_by_patient_id(loaded: Loaded) -> None:
    port, studies = loaded
    query = identifier("STUDY", PatientID="P1", StudyDate=None, StudyInstanceUID=None)
    found = matches(find(port, query))
    assert sorted(_values(found, "StudyDate")) == ["20240105", "20240320"]
    expected = {s.uid for s in studies if s.spec.patient_id == "P1"}
    assert set(_values(found, "StudyInstanceUID")) == expected


def test_only_requested_keys_returned(loaded: Loaded) -> None:
    port, _ = loaded
    query = identifier("STUDY", PatientID="P2", StudyDescription=None, ReferringPhysicianName=None)
    [match] = matches(find(port, query))
    # Retrieve AE Title and Instance Availability are in every response (PS3.4 C.4.1.1.3.2).
    assert set(match.keys()) == {
        0x00080052,
        0x00080054,
        0x00080056,
        0x00080090,
        0x00081030,
        0x00100020,
    }
    assert match.QueryRetrieveLevel == "STUDY"
    assert match.StudyDescription == "Abdomen"
    assert match.ReferringPhysicianName == ""
    assert match.RetrieveAETitle == "CIRRUS"
    assert match.InstanceAvailability == "ONLINE"


def test_timezone_only_with_value(loaded: Loaded) -> None:
    port, _ = loaded
    query = identifier("STUDY", PatientID="P2", TimezoneOffsetFromUTC=None)
    [match] = matches(find(port, query))
    assert match.TimezoneOffsetFromUTC == "-0500"
    query.PatientID = "P3"
    found = matches(find(port, query))
    assert len(found) == 1
    assert "TimezoneOffsetFromUTC" not in found[0]


def test_name_wildcard_case_insensitive(loaded: Loaded) -> None:
    port, _ = loaded
    found = matches(find(port, identifier("STUDY", PatientName="DOE*", PatientID=None)))
    assert sorted(_values(found, "PatientID")) == ["P1", "P1", "P3"]


def test_name_single_value(loaded: Loaded) -> None:
    port, _ = loaded
    found = matches(find(port, identifier("STUDY", PatientName="Roe^Richard")))
    assert len(found) == 1
    assert str(found[0].PatientName) == "Roe^Richard"


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        ("20240101-20240331", ["20240105", "20240320"]),
        ("-20231231", ["20231231"]),
        ("20240601-", ["20240601"]),
        ("20240105", ["20240105"]),
    ],
)
def test_study_date_range(loaded: Loaded, dates: str, expected: list[str]) -> None:
    port, _ = loaded
    found = matches(find(port, identifier("STUDY", StudyDate=dates)))
    assert sorted(_values(found, "StudyDate")) == expected


def test_uid_list(loaded: Loaded) -> None:
    port, studies = loaded
    wanted = [studies[0].uid, studies[2].uid]
    found = matches(find(port, identifier("STUDY", StudyInstanceUID=wanted)))
    assert sorted(_values(found, "StudyInstanceUID")) == sorted(wanted)


def test_wildcard_accession_unindexed(loaded: Loaded) -> None:
    port, _ = loaded
    found = matches(find(port, identifier("STUDY", StudyDescription="*CT*", AccessionNumber=None)))
    assert sorted(_values(found, "AccessionNumber")) == ["A100", "A300"]


def test_study_computed_attributes(loaded: Loaded) -> None:
    port, studies = loaded
    query = identifier(
        "STUDY",
        StudyInstanceUID=studies[0].uid,
        ModalitiesInStudy=None,
        NumberOfStudyRelatedSeries=None,
        NumberOfStudyRelatedInstances=None,
        InstanceAvailability=None,
        RetrieveAETitle=None,
    )
    [match] = matches(find(port, query))
    assert list(match.ModalitiesInStudy) == ["CT", "SR"]
    assert match.NumberOfStudyRelatedSeries == 2
    assert match.NumberOfStudyRelatedInstances == 4
    assert match.InstanceAvailability == "ONLINE"
    assert match.RetrieveAETitle == "CIRRUS"


def test_modalities_in_study_list(loaded: Loaded) -> None:
    port, _ = loaded
    query = identifier("STUDY", ModalitiesInStudy=["MR", "SR"], AccessionNumber=None)
    found = matches(find(port, query))
    assert sorted(_values(found, "AccessionNumber")) == ["A100", "A101"]


def test_patient_level_counts(loaded: Loaded) -> None:
    port, _ = loaded
    query = identifier(
        "PATIENT",
        PatientID=None,
        PatientName=None,
        NumberOfPatientRelatedStudies=None,
        NumberOfPatientRelatedSeries=None,
        NumberOfPatientRelatedInstances=None,
    )
    found = matches(find(port, query, PATIENT_ROOT_FIND))
    by_id = {ds.PatientID: ds for ds in found}
    assert sorted(by_id) == ["P1", "P2", "P3"]
    assert by_id["P1"].NumberOfPatientRelatedStudies == 2
    assert by_id["P1"].NumberOfPatientRelatedSeries == 3
    assert by_id["P1"].NumberOfPatientRelatedInstances == 7
    assert by_id["P3"].NumberOfPatientRelatedSeries == 2
    assert str(by_id["P2"].PatientName) == "Roe^Richard"
    assert all(ds.QueryRetrieveLevel == "PATIENT" for ds in found)


def test_patient_level_name_match(loaded: Loaded) -> None:
    port, _ = loaded
    query = identifier("PATIENT", PatientName="doe^j*", PatientID=None)
    found = matches(find(port, query, PATIENT_ROOT_FIND))
    assert sorted(_values(found, "PatientID")) == ["P1", "P3"]


def test_patient_root_study_level(loaded: Loaded) -> None:
    port, _ = loaded
    query = identifier("STUDY", PatientID="P1", AccessionNumber=None)
    found = matches(find(port, query, PATIENT_ROOT_FIND))
    assert sorted(_values(found, "AccessionNumber")) == ["A100", "A101"]


def test_patient_root_series_level(loaded: Loaded) -> None:
    port, studies = loaded
    study = studies[3]
    query = identifier("SERIES", PatientID="P3", StudyInstanceUID=study.uid, SeriesInstanceUID=None)
    found = matches(find(port, query, PATIENT_ROOT_FIND))
    assert sorted(_values(found, "SeriesInstanceUID")) == sorted(s[0] for s in study.series)
    # A patient that the study does not belong to matches nothing.
    query = identifier("SERIES", PatientID="P1", StudyInstanceUID=study.uid)
    assert matches(find(port, query, PATIENT_ROOT_FIND)) == []


def test_series_level(loaded: Loaded) -> None:
    port, studies = loaded
    study = studies[0]
    query = identifier(
        "SERIES",
        StudyInstanceUID=study.uid,
        SeriesInstanceUID=None,
        Modality="CT",
        SeriesNumber=None,
        NumberOfSeriesRelatedInstances=None,
    )
    [match] = matches(find(port, query))
    assert match.SeriesInstanceUID == study.series[0][0]
    assert match.NumberOfSeriesRelatedInstances == 2
    assert match.SeriesNumber == 1
    assert match.StudyInstanceUID == study.uid


def test_image_level(loaded: Loaded) -> None:
    port, studies = loaded
    series_uid, _, sops = studies[1].series[0]
    query = identifier(
        "IMAGE",
        StudyInstanceUID=studies[1].uid,
        SeriesInstanceUID=series_uid,
        SOPInstanceUID=None,
        InstanceNumber="2",
        SOPClassUID=None,
    )
    [match] = matches(find(port, query))
    assert match.SOPInstanceUID == sops[1]
    assert match.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert match.QueryRetrieveLevel == "IMAGE"


def test_image_level_metadata_keys(loaded: Loaded) -> None:
    port, studies = loaded
    series_uid, _, sops = studies[2].series[0]
    # KVP and SliceThickness are not in the instance record; they come from its metadata.
    query = identifier(
        "IMAGE",
        StudyInstanceUID=studies[2].uid,
        SeriesInstanceUID=series_uid,
        SOPInstanceUID=None,
        KVP=None,
        SliceThickness="5",
    )
    [match] = matches(find(port, query))
    assert match.SOPInstanceUID == sops[0]
    assert float(match.KVP) == 120.0
    assert float(match.SliceThickness) == 5.0
    query.SliceThickness = "3"
    assert matches(find(port, query)) == []


def test_sequence_returns_matching_items(loaded: Loaded) -> None:
    port, studies = loaded
    study = studies[2]
    item = Dataset()
    item.ScheduledProcedureStepID = "S8"
    item.RequestedProcedureID = ""
    query = identifier("SERIES", StudyInstanceUID=study.uid, RequestAttributesSequence=[item])
    [match] = matches(find(port, query))
    [returned] = match.RequestAttributesSequence
    assert returned.ScheduledProcedureStepID == "S8"
    assert returned.RequestedProcedureID == "R8"
    item.ScheduledProcedureStepID = "S9"
    assert matches(find(port, query)) == []


def test_sequence_universal_returns_all_items(loaded: Loaded) -> None:
    port, studies = loaded
    query = identifier("SERIES", StudyInstanceUID=studies[2].uid, RequestAttributesSequence=[])
    [match] = matches(find(port, query))
    steps = [item.ScheduledProcedureStepID for item in match.RequestAttributesSequence]
    assert steps == ["S7", "S8"]


def test_unsupported_key_pending_warning(loaded: Loaded) -> None:
    port, _ = loaded
    # PatientMotherBirthName is not in the index: it is neither matched nor returned.
    query = identifier("STUDY", PatientID="P1", PatientMotherBirthName="Smith", StudyDate=None)
    responses = find(port, query)
    *pending, (final, _) = responses
    assert final.Status == 0x0000
    assert [status.Status for status, _ in pending] == [0xFF01, 0xFF01]
    found = [ds for _, ds in pending if ds is not None]
    assert sorted(_values(found, "StudyDate")) == ["20240105", "20240320"]
    assert all("PatientMotherBirthName" not in ds for ds in found)


def test_universal_unsupported_key_left_out(loaded: Loaded) -> None:
    port, _ = loaded
    # RetrieveURL is a DICOMweb attribute, and Modality belongs to the SERIES level.
    query = identifier("STUDY", PatientID="P2", RetrieveURL=None, Modality=None)
    [(status, match), (final, _)] = find(port, query)
    assert status.Status == 0xFF01
    assert final.Status == 0x0000
    assert match is not None
    assert "RetrieveURL" not in match
    assert "Modality" not in match


def test_supported_keys_plain_pending(loaded: Loaded) -> None:
    port, _ = loaded
    query = identifier("STUDY", PatientID="P2", StudyDate=None, ModalitiesInStudy=None)
    assert [status.Status for status, _ in find(port, query)] == [0xFF00, 0x0000]


def test_private_key_ignored(loaded: Loaded) -> None:
    port, _ = loaded
    query = identifier("STUDY", PatientID="P2")
    query.add_new(0x00091010, "LO", "")
    [(status, match), _] = find(port, query)
    assert status.Status == 0xFF00
    assert match is not None
    assert 0x00091010 not in match


def test_private_key_with_value_pending_warning(loaded: Loaded) -> None:
    port, _ = loaded
    query = identifier("STUDY", PatientID="P2", AccessionNumber=None)
    query.add_new(0x00091010, "LO", "ACME")
    [(status, match), (final, _)] = find(port, query)
    assert status.Status == 0xFF01
    assert final.Status == 0x0000
    assert match is not None
    # The private key is not matched, so the study of P2 still matches.
    assert match.AccessionNumber == "A200"
    assert 0x00091010 not in match


def test_missing_level_identifier_mismatch(loaded: Loaded) -> None:
    port, _ = loaded
    query = Dataset()
    query.PatientID = "P1"
    [(status, ds)] = find(port, query)
    assert status.Status == 0xA900
    assert "QueryRetrieveLevel" in status.ErrorComment
    assert ds is None


def test_level_not_in_model(loaded: Loaded) -> None:
    port, _ = loaded
    [(status, _)] = find(port, identifier("PATIENT", PatientID="P1"), STUDY_ROOT_FIND)
    assert status.Status == 0xA900
    assert status.OffendingElement == 0x00080052


def test_series_without_study_uid(loaded: Loaded) -> None:
    port, _ = loaded
    [(status, _)] = find(port, identifier("SERIES", Modality="CT"))
    assert status.Status == 0xA900
    assert "StudyInstanceUID" in status.ErrorComment
    assert status.OffendingElement == 0x0020000D


def test_patient_root_study_without_patient_id(loaded: Loaded) -> None:
    port, _ = loaded
    query = identifier("STUDY", PatientID="P*", StudyDate=None)
    [(status, _)] = find(port, query, PATIENT_ROOT_FIND)
    assert status.Status == 0xA900
    assert status.OffendingElement == 0x00100020


@pytest.mark.parametrize(
    ("model", "level", "keys", "offending"),
    [
        (PATIENT_ROOT_FIND, "STUDY", {"PatientID": ["P1", "P2"]}, 0x00100020),
        (PATIENT_ROOT_FIND, "STUDY", {"PatientID": ""}, 0x00100020),
        (STUDY_ROOT_FIND, "SERIES", {"StudyInstanceUID": ["1.2.3", "1.2.4"]}, 0x0020000D),
        (STUDY_ROOT_FIND, "SERIES", {"StudyInstanceUID": ""}, 0x0020000D),
        (STUDY_ROOT_FIND, "SERIES", {"StudyInstanceUID": "1.3*"}, 0x0020000D),
        (PATIENT_ROOT_FIND, "SERIES", {"PatientID": "P1", "StudyInstanceUID": "1.2.?"}, 0x0020000D),
        (
            STUDY_ROOT_FIND,
            "IMAGE",
            {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": ["1.2.4", "1.2.5"]},
            0x0020000E,
        ),
        (
            STUDY_ROOT_FIND,
            "IMAGE",
            {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.4*"},
            0x0020000E,
        ),
    ],
    ids=[
        "patient-list",
        "patient-empty",
        "study-list",
        "study-empty",
        "study-wildcard",
        "study-question-mark",
        "series-list",
        "series-wildcard",
    ],
)
# pydicom warns about the wildcards, which are not valid in a UID.
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_upper_unique_key_not_single(
    loaded: Loaded, model: str, level: str, keys: dict[str, Any], offending: int
) -> None:
    port, _ = loaded
    responses = find(port, identifier(level, **keys), model)
    [(status, match)] = responses
    assert status.Status == 0xA900
    assert status.OffendingElement == offending
    assert keyword_for_tag(offending) in status.ErrorComment
    assert match is None


def test_sequence_with_two_items(loaded: Loaded) -> None:
    port, studies = loaded
    items = [Dataset(), Dataset()]
    for item in items:
        item.ScheduledProcedureStepID = ""
    query = identifier("SERIES", StudyInstanceUID=studies[2].uid, RequestAttributesSequence=items)
    [(status, _)] = find(port, query)
    assert status.Status == 0xA900


def test_invalid_date_unable_to_process(loaded: Loaded) -> None:
    port, _ = loaded
    with pytest.warns(UserWarning, match="Invalid value for VR DA"):
        query = identifier("STUDY", StudyDate="2024")
    [(status, _)] = find(port, query)
    assert status.Status == 0xC000
    assert "StudyDate" in status.ErrorComment


# QueryRetrieveLevel (0008,0052) "STUDY " in Explicit VR Little Endian.
_STUDY_LEVEL = b"\x08\x00\x52\x00CS\x06\x00STUDY "
# Elements with the VR "ZZ", which is not a DICOM VR, so pydicom cannot decode them.
_UNKNOWN_VR_LEVEL = b"\x08\x00\x52\x00ZZ\x06\x00STUDY "
_UNKNOWN_VR_PATIENT_ID = b"\x10\x00\x20\x00ZZ\x02\x00P1"


@pytest.mark.parametrize(
    ("encoded", "comment", "offending"),
    [
        (_UNKNOWN_VR_LEVEL, "the Identifier cannot be decoded", None),
        (_STUDY_LEVEL + _UNKNOWN_VR_PATIENT_ID, "key (0010,0020) cannot be decoded", 0x00100020),
    ],
    ids=["level", "patient-id"],
)
def test_undecodable_identifier_unable_to_process(
    loaded: Loaded,
    monkeypatch: pytest.MonkeyPatch,
    encoded: bytes,
    comment: str,
    offending: int | None,
) -> None:
    port, _ = loaded
    ae = AE("FINDSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(STUDY_ROOT_FIND, ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, port, ae_title=DEFAULT_AE_TITLE)
    assert assoc.is_established
    query = identifier("STUDY", PatientID="P1")
    try:
        # The requester's encoder returns ``encoded`` in place of the Identifier.
        with monkeypatch.context() as patch:
            patch.setattr(pynetdicom.association, "encode", lambda *args: encoded)
            responses = list(assoc.send_c_find(query, STUDY_ROOT_FIND))
        again = list(assoc.send_c_find(query, STUDY_ROOT_FIND))
    finally:
        assoc.release()
    [(status, match)] = responses
    assert status.Status == 0xC000
    assert status.ErrorComment == comment
    assert status.get("OffendingElement") == offending
    assert match is None
    # The association still serves requests.
    assert len(matches(again)) == 2


# PatientID (0010,0020) declares 8 bytes of value, and the message ends after 2 of them.
_TRUNCATED_PATIENT_ID = b"\x10\x00\x20\x00LO\x08\x00P1"


def test_truncated_identifier_unable_to_process(
    loaded: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _ = loaded
    ae = AE("FINDSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(STUDY_ROOT_FIND, ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, port, ae_title=DEFAULT_AE_TITLE)
    assert assoc.is_established
    query = identifier("STUDY", PatientID="P1")
    try:
        with monkeypatch.context() as patch:
            encoded = _STUDY_LEVEL + _TRUNCATED_PATIENT_ID
            patch.setattr(pynetdicom.association, "encode", lambda *args: encoded)
            responses = list(assoc.send_c_find(query, STUDY_ROOT_FIND))
        again = list(assoc.send_c_find(query, STUDY_ROOT_FIND))
    finally:
        assoc.release()
    [(status, match)] = responses
    assert status.Status == 0xC000
    assert status.ErrorComment == "the Identifier cannot be decoded: data set is truncated"
    assert match is None
    assert len(matches(again)) == 2


def find_encoded(
    port: int, monkeypatch: pytest.MonkeyPatch, encoded: bytes
) -> list[tuple[Dataset, Dataset | None]]:
    """Send a Study Root C-FIND whose Identifier is the Explicit VR Little Endian ``encoded``."""
    ae = AE("FINDSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(STUDY_ROOT_FIND, ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, port, ae_title=DEFAULT_AE_TITLE)
    assert assoc.is_established
    try:
        with monkeypatch.context() as patch:
            patch.setattr(pynetdicom.association, "encode", lambda *args: encoded)
            return list(assoc.send_c_find(identifier("STUDY"), STUDY_ROOT_FIND))
    finally:
        assoc.release()


def find_log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Return the log line of each C-FIND request, without other messages of the service."""
    lines = [r.getMessage() for r in caplog.records if r.name == "cirrus.gateway.find"]
    return [line for line in lines if line.startswith("C-FIND from ")]


@pytest.mark.parametrize(
    ("encoded", "described"),
    [
        (_STUDY_LEVEL + _TRUNCATED_PATIENT_ID, "at STUDY level"),
        (_STUDY_LEVEL + _UNKNOWN_VR_PATIENT_ID, "at STUDY level"),
        (_UNKNOWN_VR_LEVEL, "with a Query/Retrieve Level that could not be read"),
    ],
    ids=["truncated", "undecodable-key", "undecodable-level"],
)
def test_log_line_level_of_undecodable_query(
    loaded: Loaded,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    encoded: bytes,
    described: str,
) -> None:
    port, _ = loaded
    with caplog.at_level(logging.INFO, logger="cirrus.gateway.find"):
        [(status, _)] = find_encoded(port, monkeypatch, encoded)
    assert status.Status == 0xC000
    assert find_log_lines(caplog) == [f"C-FIND from FINDSCU {described}: 0 matches, status 0xC000"]


def test_log_line_level_missing_or_invalid(
    loaded: Loaded, caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = loaded
    without_level = Dataset()
    without_level.PatientID = "P1"
    with caplog.at_level(logging.INFO, logger="cirrus.gateway.find"):
        [(missing, _)] = find(port, without_level)
        [(invalid, _)] = find(port, identifier("PATIENT", PatientID="P1"), STUDY_ROOT_FIND)
        found = matches(find(port, identifier("SERIES", StudyInstanceUID="1.2.3.4.5")))
    assert missing.Status == 0xA900
    assert invalid.Status == 0xA900
    assert found == []
    assert find_log_lines(caplog) == [
        "C-FIND from FINDSCU without a Query/Retrieve Level: 0 matches, status 0xA900",
        "C-FIND from FINDSCU at invalid level 'PATIENT': 0 matches, status 0xA900",
        "C-FIND from FINDSCU at SERIES level: 0 matches, status 0x0000",
    ]


def test_caller_without_query_permission(loaded: Loaded) -> None:
    port, _ = loaded
    [(status, _)] = find(port, identifier("STUDY", PatientID="P1"), calling_ae="STOREONLY")
    assert status.Status == 0x0124
    assert status.ErrorComment == "this calling AE title may not query"


def test_other_site_sees_nothing(loaded: Loaded) -> None:
    port, _ = loaded
    assert matches(find(port, identifier("STUDY", PatientID="P1"), calling_ae="OTHERSITE")) == []
    assert matches(find(port, identifier("STUDY", StudyDate=None), calling_ae="OTHERSITE")) == []


def test_cancel_after_first_match(loaded: Loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    port, _ = loaded
    build = response_identifier

    def slow_build(*args: Any) -> Dataset:
        # Leaves the C-CANCEL time to arrive before the next match is sent.
        time.sleep(0.3)
        built: Dataset = build(*args)
        return built

    monkeypatch.setattr(find_module, "response_identifier", slow_build)
    statuses = []
    with association(port) as assoc:
        for status, _ in assoc.send_c_find(identifier("STUDY"), STUDY_ROOT_FIND, msg_id=7):
            statuses.append(status.Status)
            if len(statuses) == 1:
                assoc.send_c_cancel(7, query_model=STUDY_ROOT_FIND)
    assert statuses[-1] == 0xFE00
    assert set(statuses[:-1]) == {0xFF00}
    assert len(statuses) - 1 < 4


def test_read_limit_out_of_resources(loaded: Loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    port, _ = loaded
    monkeypatch.setattr(qido, "UNINDEXED_READ_LIMIT", 2)
    responses = find(port, identifier("STUDY", StudyDescription="*"))
    assert responses[-1][0].Status == 0x0000  # universal matching is not capped
    responses = find(port, identifier("STUDY", StudyDescription="*e*"))
    *pending, (final, _) = responses
    assert final.Status == 0xA700
    assert "stopped after 2 records" in final.ErrorComment
    assert len(pending) <= 2


def test_index_unavailable_out_of_resources(moto_server: MotoProcess) -> None:
    # A deployment whose resources were never created: every index read fails.
    names = ResourceNames(deployment=f"missing{uuid.uuid4().hex[:8]}")
    settings = Settings.for_names(names, endpoint_url=moto_server.endpoint_url)
    with start_gateway(settings, config=CONFIG) as gateway:
        [(status, _)] = find(gateway.port, identifier("STUDY", PatientID="P1"))
    assert status.Status == 0xA700
    assert status.ErrorComment == "the archive index is unavailable; retry later"


def test_log_line_without_patient_data(loaded: Loaded, caplog: pytest.LogCaptureFixture) -> None:
    port, _ = loaded
    with caplog.at_level(logging.INFO, logger="cirrus.gateway.find"):
        matches(find(port, identifier("STUDY", PatientName="Roe^Richard", PatientID=None)))
    [record] = [record for record in caplog.records if record.name == "cirrus.gateway.find"]
    assert record.getMessage() == "C-FIND from FINDSCU at STUDY level: 1 matches, status 0x0000"
    logged = f"{record.getMessage()} {vars(record)}"
    assert "Roe" not in logged
    assert "P2" not in logged


def test_damaged_record_unable_to_process(loaded: Loaded, gateway_settings: Settings) -> None:
    port, _ = loaded
    services = Services(gateway_settings)
    [study] = load_studies(services, DAMAGED_SITE)[2:3]
    record = get_record(services.index_model, study_pk(DAMAGED_SITE, study.uid), "STUDY")
    assert record is not None
    # A PatientWeight that is not a decimal string cannot become a DS element.
    record.update(
        actions=[
            IndexRecord.attrs.set({**record.attrs, "00101030": {"vr": "DS", "Value": ["heavy"]}})
        ]
    )
    query = identifier("STUDY", StudyInstanceUID=study.uid, PatientWeight=None)
    [(status, _)] = find(port, query, calling_ae="DAMAGED")
    assert status.Status == 0xC001
    assert status.ErrorComment == "internal error in the archive"
    query = identifier("STUDY", StudyInstanceUID=study.uid, PatientID=None)
    assert _values(matches(find(port, query, calling_ae="DAMAGED")), "PatientID") == ["P2"]
