"""The DICOM audit message (PS3.15 A.5) that each audit event becomes, field by field."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cirrus.audit import (
    DESTINATION_MEDIA_ROLE,
    DESTINATION_ROLE,
    SOURCE_ROLE,
    STUDY_ROOT_FIND,
    URI_MEDIA,
    Actor,
    AuditAction,
    AuditEvent,
    AuditOutcome,
    DeletionRecord,
    StudyAccess,
    TransferParty,
    query_keys_of,
)
from cirrus.storage.keys import InstanceKey

SOURCE = "cirrus-test"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
TIME = datetime(2026, 5, 4, 10, 15, 2, 123456, tzinfo=UTC)


def event(action: AuditAction, **fields: object) -> AuditEvent:
    values: dict[str, object] = {
        "action": action,
        "outcome": AuditOutcome.SUCCESS,
        "actor": Actor(ae_title="CT_NORTH", source_ip="10.0.0.5"),
        "site": "north",
        "request_id": "req-1",
        "transport": "DIMSE",
        "time": TIME,
    }
    values.update(fields)
    return AuditEvent(**values)  # type: ignore[arg-type]


def code(value: str, meaning: str, system: str = "DCM") -> dict[str, str]:
    return {"csd-code": value, "codeSystemName": system, "originalText": meaning}


def decoded(value: str) -> str:
    return base64.b64decode(value).decode()


@pytest.mark.parametrize(
    ("action", "event_id", "meaning", "action_code"),
    [
        (AuditAction.STORE, "110104", "DICOM Instances Transferred", "C"),
        (AuditAction.RETRIEVE, "110104", "DICOM Instances Transferred", "R"),
        (AuditAction.QUERY, "110112", "Query", "E"),
        (AuditAction.DELETE, "110105", "DICOM Study Deleted", "D"),
    ],
)
def test_event_identification_per_action(
    action: AuditAction, event_id: str, meaning: str, action_code: str
) -> None:
    identification = event(action).to_message(SOURCE)["EventIdentification"]

    assert identification["EventID"] == code(event_id, meaning)
    assert identification["EventActionCode"] == action_code
    assert identification["EventDateTime"] == "2026-05-04T10:15:02.123456+00:00"
    assert identification["EventOutcomeIndicator"] == 0
    assert "EventOutcomeDescription" not in identification


def test_event_time_in_utc() -> None:
    local = TIME.astimezone(timezone(timedelta(hours=2)))

    identification = event(AuditAction.QUERY, time=local).to_message(SOURCE)

    assert identification["EventIdentification"]["EventDateTime"] == (
        "2026-05-04T10:15:02.123456+00:00"
    )


def test_failure_has_outcome_description() -> None:
    failed = event(
        AuditAction.STORE, outcome=AuditOutcome.SERIOUS_FAILURE, detail="archive unavailable"
    )

    identification = failed.to_message(SOURCE)["EventIdentification"]

    assert identification["EventOutcomeIndicator"] == 8
    assert identification["EventOutcomeDescription"] == "archive unavailable"


def test_success_drops_detail() -> None:
    message = event(AuditAction.STORE, detail="ignored").to_message(SOURCE)

    assert "EventOutcomeDescription" not in message["EventIdentification"]


def test_store_participants() -> None:
    message = event(AuditAction.STORE, called_ae_title="CIRRUS").to_message(SOURCE)

    requestor, cirrus = message["ActiveParticipant"]
    assert requestor == {
        "UserID": "CT_NORTH",
        "UserIsRequestor": True,
        "UserIDTypeCode": code("110119", "Station AE Title"),
        "RoleIDCode": [code("110153", "Source Role ID")],
        "NetworkAccessPointID": "10.0.0.5",
        "NetworkAccessPointTypeCode": 2,
    }
    assert cirrus == {
        "UserID": "CIRRUS",
        "UserIsRequestor": False,
        "RoleIDCode": [code("110152", "Destination Role ID")],
        "UserIDTypeCode": code("110119", "Station AE Title"),
    }


def test_query_participant_roles() -> None:
    requestor, cirrus = event(AuditAction.QUERY).to_message(SOURCE)["ActiveParticipant"]

    assert requestor["RoleIDCode"] == [code("110153", "Source Role ID")]
    assert cirrus["RoleIDCode"] == [code("110152", "Destination Role ID")]


def test_retrieve_participant_roles() -> None:
    requestor, cirrus = event(AuditAction.RETRIEVE).to_message(SOURCE)["ActiveParticipant"]

    assert requestor["RoleIDCode"] == [code("110152", "Destination Role ID")]
    assert cirrus["RoleIDCode"] == [code("110153", "Source Role ID")]


def test_move_destination_participant() -> None:
    move = event(AuditAction.RETRIEVE, move_destination="WS_NORTH")

    requestor, cirrus, destination = move.to_message(SOURCE)["ActiveParticipant"]

    assert requestor["UserIsRequestor"] is True
    assert "RoleIDCode" not in requestor
    assert cirrus["RoleIDCode"] == [code("110153", "Source Role ID")]
    assert destination == {
        "UserID": "WS_NORTH",
        "UserIsRequestor": False,
        "RoleIDCode": [code("110152", "Destination Role ID")],
        "UserIDTypeCode": code("110119", "Station AE Title"),
    }


def test_delete_participants() -> None:
    requestor, cirrus = event(AuditAction.DELETE).to_message(SOURCE)["ActiveParticipant"]

    assert "RoleIDCode" not in requestor
    assert cirrus["RoleIDCode"] == [code("110150", "Application")]
    assert cirrus["UserID"] == SOURCE


def test_principal_is_user_id() -> None:
    actor = Actor(principal="radiologist", source_ip="192.0.2.1", user_agent="OHIF")
    web = event(AuditAction.RETRIEVE, actor=actor, transport="DICOMweb")

    requestor = web.to_message(SOURCE)["ActiveParticipant"][0]

    assert requestor["UserID"] == "radiologist"
    assert "UserIDTypeCode" not in requestor
    assert requestor["NetworkAccessPointID"] == "192.0.2.1"
    assert "OHIF" not in str(requestor)


def test_anonymous_requestor_is_address() -> None:
    anonymous = event(AuditAction.QUERY, actor=Actor(source_ip="127.0.0.1"))

    requestor = anonymous.to_message(SOURCE)["ActiveParticipant"][0]

    assert requestor["UserID"] == "127.0.0.1"


def test_unknown_requestor() -> None:
    requestor = event(AuditAction.QUERY, actor=Actor()).to_message(SOURCE)["ActiveParticipant"][0]

    assert requestor["UserID"] == "unknown"
    assert "NetworkAccessPointID" not in requestor


def test_audit_source_identification() -> None:
    source = event(AuditAction.STORE).to_message(SOURCE)["AuditSourceIdentification"]

    assert source["AuditSourceID"] == SOURCE
    assert source["AuditEnterpriseSiteID"] == "north"
    assert source["AuditSourceTypeCode"] == [code("4", "Application Server", "RFC-3881")]


def test_audit_source_without_site() -> None:
    source = event(AuditAction.STORE, site=None).to_message(SOURCE)["AuditSourceIdentification"]

    assert "AuditEnterpriseSiteID" not in source


def test_study_participant_object() -> None:
    study = StudyAccess(
        study="1.2.3",
        series=("1.2.3.1",),
        instances=("1.2.3.1.1", "1.2.3.1.2", "1.2.3.1.3"),
        sop_classes=((CT, 2), (MR, 1)),
        instance_classes=(CT, MR, CT),
    )

    (study_object,) = event(AuditAction.STORE, studies=(study,)).to_message(SOURCE)[
        "ParticipantObjectIdentification"
    ]

    assert study_object["ParticipantObjectID"] == "1.2.3"
    assert study_object["ParticipantObjectTypeCode"] == 2
    assert study_object["ParticipantObjectTypeCodeRole"] == 3
    assert study_object["ParticipantObjectIDTypeCode"] == code("110180", "Study Instance UID")
    assert study_object["ParticipantObjectDescription"] == {
        "SOPClass": [
            {
                "UID": CT,
                "NumberOfInstances": 2,
                "Instance": [{"UID": "1.2.3.1.1"}, {"UID": "1.2.3.1.3"}],
            },
            {"UID": MR, "NumberOfInstances": 1, "Instance": [{"UID": "1.2.3.1.2"}]},
        ]
    }
    (series,) = study_object["ParticipantObjectDetail"]
    assert series["type"] == "SeriesInstanceUID"
    assert decoded(series["value"]) == "1.2.3.1"


def test_one_class_holds_every_instance() -> None:
    study = StudyAccess(study="1.2.3", instances=("1.2.3.9",), sop_classes=((CT, 1),))

    (study_object,) = event(AuditAction.RETRIEVE, studies=(study,)).to_message(SOURCE)[
        "ParticipantObjectIdentification"
    ]

    assert study_object["ParticipantObjectDescription"]["SOPClass"] == [
        {"UID": CT, "NumberOfInstances": 1, "Instance": [{"UID": "1.2.3.9"}]}
    ]


def test_counts_without_instances() -> None:
    study = StudyAccess(study="1.2.3", sop_classes=((CT, 40), (MR, 2)))

    (study_object,) = event(AuditAction.RETRIEVE, studies=(study,)).to_message(SOURCE)[
        "ParticipantObjectIdentification"
    ]

    assert study_object["ParticipantObjectDescription"]["SOPClass"] == [
        {"UID": CT, "NumberOfInstances": 40},
        {"UID": MR, "NumberOfInstances": 2},
    ]
    assert "ParticipantObjectDetail" not in study_object


def test_instances_of_unknown_class() -> None:
    study = StudyAccess(study="1.2.3", instances=("1.2.3.7", "1.2.3.8"))

    (study_object,) = event(AuditAction.DELETE, studies=(study,)).to_message(SOURCE)[
        "ParticipantObjectIdentification"
    ]

    assert study_object["ParticipantObjectDescription"]["SOPClass"] == [
        {"NumberOfInstances": 2, "Instance": [{"UID": "1.2.3.7"}, {"UID": "1.2.3.8"}]}
    ]


def test_every_study_is_an_object() -> None:
    studies = (StudyAccess(study="1.2.3"), StudyAccess(study="1.2.4"))

    objects = event(AuditAction.RETRIEVE, studies=studies).to_message(SOURCE)[
        "ParticipantObjectIdentification"
    ]

    assert [item["ParticipantObjectID"] for item in objects] == ["1.2.3", "1.2.4"]


def test_instance_classes_must_match() -> None:
    with pytest.raises(ValueError, match="one per instance"):
        StudyAccess(study="1.2.3", instances=("1.2.3.1",), instance_classes=(CT, MR))


def test_query_object_has_keys_only() -> None:
    query = event(
        AuditAction.QUERY,
        query_keys=("PatientName", "StudyDate"),
        query_level="STUDY",
        query_model="1.2.840.10008.5.1.4.1.2.1.1",
    )

    message = query.to_message(SOURCE)

    (query_object,) = message["ParticipantObjectIdentification"]
    assert query_object["ParticipantObjectID"] == "1.2.840.10008.5.1.4.1.2.1.1"
    assert query_object["ParticipantObjectTypeCode"] == 2
    assert query_object["ParticipantObjectTypeCodeRole"] == 3
    assert query_object["ParticipantObjectIDTypeCode"] == code("110181", "SOP Class UID")
    assert decoded(query_object["ParticipantObjectQuery"]) == "PatientName\\StudyDate"
    (level,) = query_object["ParticipantObjectDetail"]
    assert level["type"] == "QueryRetrieveLevel"
    assert decoded(level["value"]) == "STUDY"
    assert query_keys_of(message) == ["PatientName", "StudyDate"]


def test_qido_query_uses_study_root() -> None:
    query = event(AuditAction.QUERY, transport="DICOMweb", query_keys=("ModalitiesInStudy",))

    (query_object,) = query.to_message(SOURCE)["ParticipantObjectIdentification"]

    assert query_object["ParticipantObjectID"] == STUDY_ROOT_FIND
    assert "ParticipantObjectDetail" not in query_object


def test_query_without_keys() -> None:
    message = event(AuditAction.QUERY).to_message(SOURCE)

    assert query_keys_of(message) == []


def test_store_without_studies_has_no_objects() -> None:
    message = event(AuditAction.STORE, outcome=AuditOutcome.MINOR_FAILURE).to_message(SOURCE)

    assert "ParticipantObjectIdentification" not in message


def test_deletion_event_lists_every_instance() -> None:
    keys = [
        InstanceKey("north", "1.2.3", "1.2.3.1", "1.2.3.1.1"),
        InstanceKey("north", "1.2.3", "1.2.3.2", "1.2.3.2.1"),
    ]
    record = DeletionRecord(
        site="north",
        actor=Actor(principal="ops", source_ip="192.0.2.9"),
        request_id="req-9",
        study="1.2.3",
        instances=keys,
        time=TIME,
    )

    deletion = record.to_event()

    assert deletion.action is AuditAction.DELETE
    assert deletion.outcome is AuditOutcome.SUCCESS
    assert deletion.site == "north"
    assert deletion.request_id == "req-9"
    assert deletion.transport == "DICOMweb"
    assert deletion.time == TIME
    (study,) = deletion.studies
    assert study.study == "1.2.3"
    assert study.series == ("1.2.3.1", "1.2.3.2")
    assert study.instances == ("1.2.3.1.1", "1.2.3.2.1")


def _participant(message: dict[str, object], role: str) -> dict[str, object]:
    participants = message["ActiveParticipant"]
    assert isinstance(participants, list)
    return next(p for p in participants if role in {r["csd-code"] for r in p.get("RoleIDCode", ())})


def test_export_to_media_message() -> None:
    uri = "file:///exports/study.zip"
    media = TransferParty(uri, DESTINATION_MEDIA_ROLE, media_type=URI_MEDIA, media_id=uri)
    study = StudyAccess(study="1.2.3", instances=("1.2.3.1",), anonymized=True)
    message = event(
        AuditAction.EXPORT,
        actor=Actor(principal="local user ops"),
        transport="command line",
        studies=(study,),
        party=media,
    ).to_message(SOURCE)
    identification = message["EventIdentification"]
    assert identification["EventID"]["csd-code"] == "110106"
    assert identification["EventActionCode"] == "R"
    participant = _participant(message, "110154")
    assert participant["MediaType"]["csd-code"] == "110037"
    assert participant["MediaIdentifier"] == uri
    assert participant["UserIsRequestor"] is False
    assert _participant(message, "110153")["UserID"] == SOURCE
    description = message["ParticipantObjectIdentification"][0]["ParticipantObjectDescription"]
    assert description["Anonymized"] is True
    assert description["SOPClass"] == [{"NumberOfInstances": 1, "Instance": [{"UID": "1.2.3.1"}]}]


def test_export_to_peer_is_transfer() -> None:
    peer = TransferParty("READER", DESTINATION_ROLE, ae_title=True, address="pacs.example")
    message = event(AuditAction.EXPORT, party=peer).to_message(SOURCE)
    identification = message["EventIdentification"]
    assert identification["EventID"]["csd-code"] == "110104"
    assert identification["EventActionCode"] == "R"
    participant = _participant(message, "110152")
    assert participant["UserID"] == "READER"
    assert participant["UserIDTypeCode"]["csd-code"] == "110119"
    assert participant["NetworkAccessPointID"] == "pacs.example"
    assert participant["NetworkAccessPointTypeCode"] == 1


def test_import_message() -> None:
    source = TransferParty("DICOMWEB", SOURCE_ROLE, address="10.0.0.9")
    message = event(
        AuditAction.IMPORT,
        outcome=AuditOutcome.MINOR_FAILURE,
        party=source,
        detail="2 rejected",
    ).to_message(SOURCE)
    identification = message["EventIdentification"]
    assert identification["EventID"]["csd-code"] == "110107"
    assert identification["EventActionCode"] == "C"
    assert identification["EventOutcomeDescription"] == "2 rejected"
    assert _participant(message, "110152")["UserIsRequestor"] is False
    assert _participant(message, "110153")["NetworkAccessPointTypeCode"] == 2
