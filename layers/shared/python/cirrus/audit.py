"""The audit trail: every store, query, retrieve and delete, as a DICOM audit message.

Each ``AuditEvent`` becomes one record of the append-only audit table (``cirrus.audit_table``).
Its message has the shape of the DICOM audit message of PS3.15 A.5, as JSON. The element and
attribute names of the schema become keys, and repeated elements become lists. The events map
to the DICOM audit messages thus:

============  ==============================================  ===============
action        EventID                                         EventActionCode
============  ==============================================  ===============
store         (110104, DCM, "DICOM Instances Transferred")    C (create)
retrieve      (110104, DCM, "DICOM Instances Transferred")    R (read)
query         (110112, DCM, "Query")                          E (execute)
delete        (110105, DCM, "DICOM Study Deleted")            D (delete)
hold          (110103, DCM, "DICOM Instances Accessed")       U (update)
release       (110103, DCM, "DICOM Instances Accessed")       U (update)
export        (110106, DCM, "Export")                         R (read)
export        (110104, DCM, "DICOM Instances Transferred")    R (read), to a DICOM peer
import        (110107, DCM, "Import")                         C (create)
============  ==============================================  ===============

``hold`` and ``release`` are the legal hold of a study being set and released by an operator
(``cirrus.lifecycle.holds``). ``export`` and ``import`` are the operator commands that move
instances across the archive's boundary (``cirrus.operations.command_audit``): the media, DICOM
peer or site on the other side is a participant of the message (``TransferParty``).

A record names who asked, when, from which address, and the UIDs that the request touched. It
contains no patient names, IDs or other demographics, and a query's record names the attributes
that the query matched on but never their values.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any, Final, Literal, Protocol

from cirrus.audit_table import (
    STUDY_INSTANCE_UID_CODE,
    AuditEntry,
    AuditRecord,
    new_record_id,
    read_records_between,
    read_records_of_study,
    write_entry,
)
from cirrus.storage.keys import InstanceKey

logger = logging.getLogger(__name__)

# Query/Retrieve information model of QIDO-RS requests, which PS3.18 defines on the Study Root
# model (Study Root Query/Retrieve Information Model - FIND).
STUDY_ROOT_FIND: Final = "1.2.840.10008.5.1.4.1.2.2.1"


@dataclass(frozen=True)
class Actor:
    """Who sent a request, as far as the request identifies them.

    ``principal`` is the authenticated user (a Cognito ``sub`` or username, or an IAM ARN),
    or None for a request without authentication, such as on the local stack.
    """

    principal: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    # The calling AE title of a DIMSE association.
    ae_title: str | None = None


class AuditAction(StrEnum):
    """The action of an audited request, one of the actions that access rules grant."""

    STORE = "store"
    QUERY = "query"
    RETRIEVE = "retrieve"
    DELETE = "delete"
    HOLD = "hold"
    RELEASE = "release"
    EXPORT = "export"
    IMPORT = "import"


class AuditOutcome(IntEnum):
    """Event Outcome Indicator of the DICOM audit message (PS3.15 A.5.1)."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


# The channel of a request: ``command line`` for an operator's command (legal holds, export,
# de-identified copies, import), and
# ``retention`` for the deletions of retention, by command or by its scheduled function.
Transport = Literal["DICOMweb", "DIMSE", "command line", "retention"]


@dataclass(frozen=True)
class StudyAccess:
    """One study that a request touched, with the series and instances it touched in it."""

    study: str
    series: tuple[str, ...] = ()
    instances: tuple[str, ...] = ()
    # SOP Class UID to the number of instances of that class, as PS3.15 A.5.2.4 describes them.
    sop_classes: tuple[tuple[str, int], ...] = ()
    # The SOP Class UID of each UID of ``instances``, in the same order, where it is known.
    # Empty when it is not, and then the instances are listed without their class.
    instance_classes: tuple[str, ...] = ()
    # True when the instances were de-identified: the Anonymized element of the study object.
    anonymized: bool = False

    def __post_init__(self) -> None:
        if self.instance_classes and len(self.instance_classes) != len(self.instances):
            raise ValueError(
                f"study {self.study}: {len(self.instance_classes)} instance classes given for "
                f"{len(self.instances)} instances; give one per instance or none"
            )


@dataclass(frozen=True)
class TransferParty:
    """The other side of an export or import: media, a DICOM peer or another site.

    ``role`` is its Role ID Code. ``media_type`` and ``media_id`` are the MediaType and
    MediaIdentifier of the Data Export and Data Import messages of PS3.15 A.5.3, such as a
    folder's file URI. ``ae_title`` is True when ``user_id`` is an AE title, and ``address``
    is the peer's host.
    """

    user_id: str
    role: tuple[str, str]
    media_type: tuple[str, str] | None = None
    media_id: str | None = None
    ae_title: bool = False
    address: str | None = None


@dataclass(frozen=True)
class AuditEvent:
    """One audited request: who, what, where, when and the outcome, without patient data.

    ``site`` is None when the request was rejected before a site was chosen. ``query_keys``
    names the attributes a query matched on (keywords or tags), never their values, because
    the values of PatientName or PatientID are patient data. ``detail`` is a short reason for
    a failure, written by the code and free of request values, or the operator's reason of a
    hold or release.
    """

    action: AuditAction
    outcome: AuditOutcome
    actor: Actor
    site: str | None
    request_id: str
    transport: Transport
    studies: tuple[StudyAccess, ...] = ()
    query_keys: tuple[str, ...] = ()
    detail: str | None = None
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Query/Retrieve Level of a query (PATIENT, STUDY, SERIES or IMAGE), where it has one.
    query_level: str | None = None
    # SOP Class UID of the information model of a C-FIND; None for QIDO-RS.
    query_model: str | None = None
    # The gateway's own AE title in a DIMSE association.
    called_ae_title: str | None = None
    # The AE title that a C-MOVE sent the instances to.
    move_destination: str | None = None
    # The media, peer or site that an export wrote to or an import read from.
    party: TransferParty | None = None

    def to_message(self, audit_source_id: str) -> dict[str, Any]:
        """Build the DICOM audit message (PS3.15 A.5) of this event, as JSON-ready values.

        ``audit_source_id`` names the system that writes the record: the deployment.
        """
        objects = [_study_object(study) for study in self.studies]
        if self.action is AuditAction.QUERY:
            objects.append(_query_object(self))
        message: dict[str, Any] = {
            "EventIdentification": _event_identification(self),
            "ActiveParticipant": _participants(self, audit_source_id),
            "AuditSourceIdentification": _audit_source(self, audit_source_id),
        }
        if objects:
            message["ParticipantObjectIdentification"] = objects
        return message


# --- the message -------------------------------------------------------------------------

# EventID and EventActionCode of each action, as the DICOM audit messages define them.
_EVENTS: Final[Mapping[AuditAction, tuple[str, str, str]]] = {
    AuditAction.STORE: ("110104", "DICOM Instances Transferred", "C"),
    AuditAction.RETRIEVE: ("110104", "DICOM Instances Transferred", "R"),
    AuditAction.QUERY: ("110112", "Query", "E"),
    AuditAction.DELETE: ("110105", "DICOM Study Deleted", "D"),
    AuditAction.HOLD: ("110103", "DICOM Instances Accessed", "U"),
    AuditAction.RELEASE: ("110103", "DICOM Instances Accessed", "U"),
    AuditAction.EXPORT: ("110106", "Export", "R"),
    AuditAction.IMPORT: ("110107", "Import", "C"),
}
# An export to a DICOM peer is a network transfer of instances, audited as this event.
_TRANSFERRED: Final = ("110104", "DICOM Instances Transferred", "R")

# Actions whose ``detail`` is the operator's reason, recorded also when they succeed.
_REASONED_ACTIONS: Final = frozenset({AuditAction.HOLD, AuditAction.RELEASE})

# Role ID Codes of the active participants (DCM codes).
APPLICATION_ROLE: Final = ("110150", "Application")
DESTINATION_ROLE: Final = ("110152", "Destination Role ID")
SOURCE_ROLE: Final = ("110153", "Source Role ID")
DESTINATION_MEDIA_ROLE: Final = ("110154", "Destination Media")
SOURCE_MEDIA_ROLE: Final = ("110155", "Source Media")
# Media Type Code (DCID 405) of a folder, ZIP file or URL, identified by its URI.
URI_MEDIA: Final = ("110037", "URI")
# Participant Object ID Type Codes, and the User ID Type Code of an AE title (DCM codes).
STUDY_INSTANCE_UID_TYPE: Final = (STUDY_INSTANCE_UID_CODE, "Study Instance UID")
SOP_CLASS_UID_TYPE: Final = ("110181", "SOP Class UID")
STATION_AE_TITLE_TYPE: Final = ("110119", "Station AE Title")

# RFC 3881 codes: a study or a query is a system object (2) in the role of a report (3).
_SYSTEM_OBJECT: Final = 2
_REPORT_ROLE: Final = 3
# RFC 3881 code of the audit source type: an application server process.
_APPLICATION_SERVER: Final = "4"
# RFC 3881 codes: NetworkAccessPointID is a machine name (1) or an IP address (2).
_MACHINE_NAME: Final = 1
_IP_ADDRESS: Final = 2


def coded(code: tuple[str, str], system: str = "DCM") -> dict[str, str]:
    """Return a coded value as the audit message schema spells its attributes."""
    return {"csd-code": code[0], "codeSystemName": system, "originalText": code[1]}


def detail_value(text: str) -> str:
    """Encode the value of a ParticipantObjectDetail, which the schema types as base64Binary."""
    return base64.b64encode(text.encode()).decode("ascii")


def _event_identification(event: AuditEvent) -> dict[str, Any]:
    code, meaning, action_code = _EVENTS[event.action]
    if event.action is AuditAction.EXPORT and event.party is not None and event.party.ae_title:
        code, meaning, action_code = _TRANSFERRED
    identification: dict[str, Any] = {
        "EventID": coded((code, meaning)),
        "EventActionCode": action_code,
        "EventDateTime": event.time.astimezone(UTC).isoformat(timespec="microseconds"),
        "EventOutcomeIndicator": int(event.outcome),
    }
    if event.detail and (
        event.outcome is not AuditOutcome.SUCCESS or event.action in _REASONED_ACTIONS
    ):
        identification["EventOutcomeDescription"] = event.detail
    return identification


def _roles(event: AuditEvent) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """Return the roles of the requestor and of Cirrus in ``event``."""
    if event.action is AuditAction.STORE or event.action is AuditAction.QUERY:
        return SOURCE_ROLE, DESTINATION_ROLE
    if event.action is AuditAction.RETRIEVE:
        # A C-MOVE requestor only starts the transfer; its destination has the role instead.
        return (None if event.move_destination else DESTINATION_ROLE), SOURCE_ROLE
    if event.action is AuditAction.EXPORT:
        return None, SOURCE_ROLE
    if event.action is AuditAction.IMPORT:
        return None, DESTINATION_ROLE
    return None, APPLICATION_ROLE


def _participants(event: AuditEvent, audit_source_id: str) -> list[dict[str, Any]]:
    requestor_role, cirrus_role = _roles(event)
    actor = event.actor
    requestor: dict[str, Any] = {
        "UserID": actor.principal or actor.ae_title or actor.source_ip or "unknown",
        "UserIsRequestor": True,
    }
    if actor.principal is None and actor.ae_title:
        requestor["UserIDTypeCode"] = coded(STATION_AE_TITLE_TYPE)
    elif actor.principal is not None and actor.ae_title:
        requestor["AlternativeUserID"] = actor.ae_title
    if requestor_role is not None:
        requestor["RoleIDCode"] = [coded(requestor_role)]
    if actor.source_ip:
        requestor["NetworkAccessPointID"] = actor.source_ip
        requestor["NetworkAccessPointTypeCode"] = _IP_ADDRESS
    cirrus: dict[str, Any] = {
        "UserID": event.called_ae_title or audit_source_id,
        "UserIsRequestor": False,
        "RoleIDCode": [coded(cirrus_role)] if cirrus_role is not None else [],
    }
    if event.called_ae_title:
        cirrus["UserIDTypeCode"] = coded(STATION_AE_TITLE_TYPE)
    participants = [requestor, cirrus]
    if event.move_destination:
        participants.append(
            {
                "UserID": event.move_destination,
                "UserIsRequestor": False,
                "RoleIDCode": [coded(DESTINATION_ROLE)],
                "UserIDTypeCode": coded(STATION_AE_TITLE_TYPE),
            }
        )
    if event.party is not None:
        participants.append(_party(event.party))
    return participants


def _access_point_type(address: str) -> int:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return _MACHINE_NAME
    return _IP_ADDRESS


def _party(party: TransferParty) -> dict[str, Any]:
    participant: dict[str, Any] = {
        "UserID": party.user_id,
        "UserIsRequestor": False,
        "RoleIDCode": [coded(party.role)],
    }
    if party.ae_title:
        participant["UserIDTypeCode"] = coded(STATION_AE_TITLE_TYPE)
    if party.address:
        participant["NetworkAccessPointID"] = party.address
        participant["NetworkAccessPointTypeCode"] = _access_point_type(party.address)
    if party.media_type is not None:
        participant["MediaType"] = coded(party.media_type)
        participant["MediaIdentifier"] = party.media_id or party.user_id
    return participant


def _audit_source(event: AuditEvent, audit_source_id: str) -> dict[str, Any]:
    source: dict[str, Any] = {
        "AuditSourceID": audit_source_id,
        "AuditSourceTypeCode": [
            {
                "csd-code": _APPLICATION_SERVER,
                "codeSystemName": "RFC-3881",
                "originalText": "Application Server",
            }
        ],
    }
    if event.site is not None:
        source["AuditEnterpriseSiteID"] = event.site
    return source


def _study_object(study: StudyAccess) -> dict[str, Any]:
    description: dict[str, Any] = {"SOPClass": _sop_classes(study)}
    if study.anonymized:
        description["Anonymized"] = True
    study_object: dict[str, Any] = {
        "ParticipantObjectID": study.study,
        "ParticipantObjectTypeCode": _SYSTEM_OBJECT,
        "ParticipantObjectTypeCodeRole": _REPORT_ROLE,
        "ParticipantObjectIDTypeCode": coded(STUDY_INSTANCE_UID_TYPE),
        "ParticipantObjectDescription": description,
    }
    if study.series:
        study_object["ParticipantObjectDetail"] = [
            {"type": "SeriesInstanceUID", "value": detail_value(series)} for series in study.series
        ]
    return study_object


def _sop_classes(study: StudyAccess) -> list[dict[str, Any]]:
    """Return the SOPClass elements of a study: each class with its count and its instances.

    Instances whose class is unknown go in one SOPClass element without a UID.
    """
    counts = dict(study.sop_classes)
    by_class: dict[str | None, list[str]] = {}
    if study.instance_classes:
        for uid, sop_class in zip(study.instances, study.instance_classes, strict=True):
            by_class.setdefault(sop_class, []).append(uid)
    elif len(counts) == 1:
        by_class[next(iter(counts))] = list(study.instances)
    elif study.instances:
        by_class[None] = list(study.instances)
    elements = []
    for sop_class in sorted(counts.keys() | {key for key in by_class if key is not None}):
        instances = by_class.get(sop_class, [])
        element: dict[str, Any] = {
            "UID": sop_class,
            "NumberOfInstances": counts.get(sop_class, len(instances)),
        }
        if instances:
            element["Instance"] = [{"UID": uid} for uid in instances]
        elements.append(element)
    unclassified = by_class.get(None)
    if unclassified:
        elements.append(
            {
                "NumberOfInstances": len(unclassified),
                "Instance": [{"UID": uid} for uid in unclassified],
            }
        )
    return elements


def _query_object(event: AuditEvent) -> dict[str, Any]:
    """Return the participant object of a query (PS3.15 A.5.3.10), with its keys only.

    PS3.15 puts the whole query data set in ParticipantObjectQuery. Its values are patient
    data, so Cirrus puts there only the names of the keys, separated by backslashes.
    """
    query: dict[str, Any] = {
        "ParticipantObjectID": event.query_model or STUDY_ROOT_FIND,
        "ParticipantObjectTypeCode": _SYSTEM_OBJECT,
        "ParticipantObjectTypeCodeRole": _REPORT_ROLE,
        "ParticipantObjectIDTypeCode": coded(SOP_CLASS_UID_TYPE),
        "ParticipantObjectQuery": detail_value("\\".join(event.query_keys)),
    }
    if event.query_level:
        query["ParticipantObjectDetail"] = [
            {"type": "QueryRetrieveLevel", "value": detail_value(event.query_level)}
        ]
    return query


def query_keys_of(message: Mapping[str, Any]) -> list[str]:
    """Return the query keys that ``message`` names, decoded from ParticipantObjectQuery."""
    for item in message.get("ParticipantObjectIdentification", ()):
        encoded = item.get("ParticipantObjectQuery")
        if encoded is not None:
            text = base64.b64decode(encoded).decode()
            return text.split("\\") if text else []
    return []


# --- deletions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeletionRecord:
    """One delete request: the resource it names and the instances it removes."""

    site: str
    actor: Actor
    request_id: str
    study: str
    series: str | None = None
    sop: str | None = None
    instances: list[InstanceKey] = field(default_factory=list)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    transport: Transport = "DICOMweb"

    @property
    def level(self) -> str:
        if self.sop is not None:
            return "INSTANCE"
        return "SERIES" if self.series is not None else "STUDY"

    def to_event(self) -> AuditEvent:
        """Return the DELETE event of this request, with the UID of every instance it removes."""
        series = {key.series for key in self.instances}
        if self.series is not None:
            series.add(self.series)
        study = StudyAccess(
            study=self.study,
            series=tuple(sorted(series)),
            instances=tuple(key.sop for key in self.instances),
        )
        return AuditEvent(
            action=AuditAction.DELETE,
            outcome=AuditOutcome.SUCCESS,
            actor=self.actor,
            site=self.site,
            request_id=self.request_id,
            transport=self.transport,
            studies=(study,),
            time=self.time,
        )


# --- the log -----------------------------------------------------------------------------


class AuditJournal(Protocol):
    """A copy of every record, written before the table's, from which the table is rebuilt.

    Only the local stack has one (``cirrus.local.audit_journal``), because its table lives in
    moto's memory.
    """

    def append(self, entry: AuditEntry) -> None:
        """Write ``entry`` durably; raise ``StoreUnavailableError`` when that fails."""


class DeferredTable(Protocol):
    """Writes journaled records into the audit table after ``AuditLog.write`` has returned.

    Only the local stack uses one (``cirrus.local.audit_journal``): there the journal is the
    durable copy, from which every start rebuilds the table in moto's memory, so a request
    need not wait for the table as well.
    """

    def submit(self, entry: AuditEntry) -> None:
        """Queue ``entry`` for the table."""

    def flush(self) -> None:
        """Return once every entry queued before the call is in the table or has failed."""


class AuditLog:
    """Writes audit records to the append-only table and reads them back by study or time.

    ``model`` is the table's model bound to a deployment (``cirrus.audit_table``), or None
    when the settings name no audit table: then ``record`` writes nothing, and
    ``record_deletion`` raises, so that nothing is deleted without its record.
    ``audit_source_id`` is the AuditSourceID of every message: the deployment's name.
    With ``deferred``, a record is durable once ``journal`` has it, and reaches the table
    afterwards; the reading methods wait for the records queued before them.
    """

    def __init__(
        self,
        model: type[AuditRecord] | None,
        audit_source_id: str,
        journal: AuditJournal | None = None,
        deferred: DeferredTable | None = None,
    ) -> None:
        if deferred is not None and journal is None:
            raise ValueError("an audit log defers its table writes only behind a journal")
        self._model = model
        self._source_id = audit_source_id
        self._journal = journal
        self._deferred = deferred
        self._warned = threading.Event()

    @property
    def model(self) -> type[AuditRecord] | None:
        return self._model

    def record(self, event: AuditEvent) -> None:
        """Write ``event`` durably; raise ``StoreUnavailableError`` when the table fails."""
        if self._model is None:
            if not self._warned.is_set():
                self._warned.set()
                logger.warning("no audit table is configured; audit records are not written")
            return
        self.write(event)

    def write(self, event: AuditEvent) -> str:
        """Write ``event`` and return its record id once DynamoDB, or the journal, has it.

        Raises ``StoreUnavailableError`` when DynamoDB, or the local journal, fails.
        """
        from cirrus.errors import StoreUnavailableError

        if self._model is None:
            raise StoreUnavailableError("no audit table is configured; set CIRRUS_AUDIT_TABLE")
        entry = self.entry_of(event)
        if self._journal is not None:
            self._journal.append(entry)
        if self._deferred is not None:
            self._deferred.submit(entry)
        else:
            write_entry(self._model, entry)
        return entry.record_id

    def entry_of(self, event: AuditEvent) -> AuditEntry:
        """Return the table entry of ``event``: its message and what its keys are made from."""
        return AuditEntry(
            record_id=new_record_id(event.time, event.request_id),
            site=event.site,
            action=str(event.action),
            outcome=int(event.outcome),
            transport=event.transport,
            request_id=event.request_id,
            user_agent=event.actor.user_agent,
            studies=tuple(dict.fromkeys(study.study for study in event.studies)),
            message=event.to_message(self._source_id),
        )

    def record_deletion(self, record: DeletionRecord) -> str:
        """Write the DELETE record of ``record`` and return its record id once it is durable.

        Raises ``StoreUnavailableError`` when the table fails; the caller must then delete
        nothing.
        """
        record_id = self.write(record.to_event())
        logger.info(
            "deletion audited",
            extra={
                "audit_record": record_id,
                "level": record.level,
                "instances": len(record.instances),
                "principal": record.actor.principal,
            },
        )
        return record_id

    def records_of_study(
        self, study: str, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[AuditEntry]:
        """Yield the records that name ``study``, oldest first, optionally within a time range.

        ``since`` is inclusive and ``until`` exclusive. Raises ``StoreUnavailableError``.
        """
        model = self._require_model()
        if self._deferred is not None:
            self._deferred.flush()
        return read_records_of_study(model, study, since, until)

    def records_between(self, since: datetime, until: datetime) -> Iterator[AuditEntry]:
        """Yield the records from ``since`` (inclusive) to ``until`` (exclusive), oldest first.

        Raises ``StoreUnavailableError``.
        """
        model = self._require_model()
        if self._deferred is not None:
            self._deferred.flush()
        return read_records_between(model, since, until)

    def _require_model(self) -> type[AuditRecord]:
        from cirrus.errors import StoreUnavailableError

        if self._model is None:
            raise StoreUnavailableError("no audit table is configured; set CIRRUS_AUDIT_TABLE")
        return self._model


def filter_records(
    records: Iterable[AuditEntry],
    site: str | None = None,
    action: AuditAction | None = None,
) -> Iterator[AuditEntry]:
    """Yield the records of ``site`` and ``action``, each None for any."""
    for record in records:
        if site is not None and record.site != site:
            continue
        if action is not None and record.action != action:
            continue
        yield record
