"""The attribute table of the Basic Application Level Confidentiality Profile and its options.

The action code of each attribute comes from table E.1-1 of DICOM PS3.15 (edition 2026c) as the
``dicom-anonymizer`` package (KitwareMedical) ships it, generated from the standard's own tables:
``dicomanonymizer.dicom_anonymization_databases.dicomfields_2026c``. We chose its table over the
two packages of the field that do the whole job:

- ``deid`` (pydicom/deid) works from recipes. Its default recipe is not Annex E: it removes every
  attribute whose keyword ends in "ID", "Date" or "Time" or contains "UID", which removes the
  Type 1 SOP Instance UID and breaks the instance. It also depends on matplotlib, which has no
  place in an archive.
- ``dicognito`` replaces by value representation (every PN, every instance UID, every DA and DT)
  plus a list of about 30 attributes. It keeps descriptions, comments and private attributes
  that table E.1-1 removes, has no options, and shifts dates by one offset per run, not per
  patient.

Neither ships table E.1-1. ``dicom-anonymizer`` ships the table as action lists and depends
only on pydicom and tqdm. We use the lists only, and apply the actions ourselves, so that the
options of table E.1-1 (Retain UIDs, dates, patient characteristics, device identity), keyed UID
remapping and per-patient date shifts can be handled here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table
from pydicom.datadict import tag_for_keyword
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag, Tag

# The edition of PS3.15 that the table of action codes comes from.
TABLE_EDITION: Final = "2026c"


class Action(enum.Enum):
    """An action on one attribute: an action code of PS3.15 table E.1-1a, resolved."""

    KEEP = "K"
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    REPLACE_UID = "U"
    # Keep a sequence and apply the profile to the attributes of each of its items.
    CLEAN_ITEMS = "K*"
    # Shift a date by the patient's offset (Retain Longitudinal Temporal Information with
    # Modified Dates).
    SHIFT_DATE = "C"


# A compound code resolves to an action that keeps the attribute present, because a
# de-identifier that does not check the IOD cannot know whether the attribute is Type 1, 2 or 3
# there. Z/D and X/D become D (a dummy value), and X/Z becomes Z (a zero-length value).
# X/Z/D becomes Z, so that a sequence such as Institution Code Sequence loses its items
# instead of keeping codes that name the institution. X/Z/U* keeps the sequence and replaces
# the UIDs in its items.
_RESOLVED_CODES: Final = {
    "D_TAGS": Action.DUMMY,
    "Z_TAGS": Action.EMPTY,
    "X_TAGS": Action.REMOVE,
    "U_TAGS": Action.REPLACE_UID,
    "Z_D_TAGS": Action.DUMMY,
    "X_Z_TAGS": Action.EMPTY,
    "X_D_TAGS": Action.DUMMY,
    "X_Z_D_TAGS": Action.EMPTY,
    "X_Z_U_STAR_TAGS": Action.CLEAN_ITEMS,
}


def _build_table() -> tuple[dict[int, Action], list[tuple[int, int, int, int, Action]]]:
    exact: dict[int, Action] = {}
    masked: list[tuple[int, int, int, int, Action]] = []
    for name, action in _RESOLVED_CODES.items():
        for entry in getattr(table, name):
            if len(entry) == 2:
                exact[int(Tag(entry[0], entry[1]))] = action
            else:
                group, element, group_mask, element_mask = entry
                masked.append((group, element, group_mask, element_mask, action))
    return exact, masked


PROFILE_ACTIONS, REPEATING_GROUP_ACTIONS = _build_table()


def _tags(*keywords: str) -> frozenset[int]:
    tags = set()
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise KeyError(f"{keyword} is not in pydicom's data dictionary")
        tags.add(tag)
    return frozenset(tags)


# The attributes that table E.1-1 marks K in its "Rtn. Pat. Chars. Opt." column.
PATIENT_CHARACTERISTICS: Final = _tags(
    "PatientAge",
    "PatientSex",
    "PatientSize",
    "PatientWeight",
    "EthnicGroup",
    "SmokingStatus",
    "PregnancyStatus",
    "PatientSexNeutered",
)

# The attributes that table E.1-1 marks K in its "Rtn. Dev. Id. Opt." column.
DEVICE_IDENTITY: Final = _tags(
    "StationName",
    "DeviceSerialNumber",
    "DeviceUID",
    "DetectorID",
    "PlateID",
    "GantryID",
    "CassetteID",
    "GeneratorID",
    "PerformedStationAETitle",
    "PerformedStationName",
    "ScheduledStationAETitle",
    "ScheduledStationName",
    "SourceSerialNumber",
    "TreatmentMachineName",
    "DeviceLabel",
    "DeviceDescription",
)

# Sequences with action D whose items are codes that identify a person, which the table does
# not list. Each is replaced by a sequence of one dummy code item.
CODE_SEQUENCES: Final = _tags("PersonIdentificationCodeSequence")

# Content Sequence (0040,A730) has action D in the Basic Profile of table E.1-1, and only the
# Clean Structured Content Option (action C, not offered here) may keep its content items. The
# sequence is therefore replaced by one dummy TEXT content item, because kept items would carry
# the free text of Text Value (0040,A160), which the table does not list.
CONTENT_SEQUENCES: Final = _tags("ContentSequence")

# Patient's Birth Date and Birth Time stay removed under both date options, because with a
# shifted or kept birth date and Patient's Age the birth date can be recovered to the day.
BIRTH_DATE_AND_TIME: Final = _tags("PatientBirthDate", "PatientBirthTime")

DATE_VRS: Final = frozenset({"DA", "DT"})
TEMPORAL_VRS: Final = frozenset({"DA", "DT", "TM"})


class DateHandling(enum.Enum):
    """The treatment of the dates and times that table E.1-1 lists."""

    # The Basic profile: removed, emptied or replaced by a dummy value as the table specifies.
    REMOVE = "remove"
    # Retain Longitudinal Temporal Information with Full Dates Option.
    RETAIN = "retain"
    # Retain Longitudinal Temporal Information with Modified Dates Option: every date shifted
    # by the same number of days for one patient; times kept.
    SHIFT = "shift"


@dataclass(frozen=True)
class ProfileOptions:
    """The options of the profile that a de-identification applies."""

    retain_uids: bool = False
    dates: DateHandling = DateHandling.REMOVE
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False

    def method_codes(self) -> list[tuple[str, str]]:
        """Return the CID 7050 code value and meaning of the profile and each option applied."""
        dcm = codes.DCM
        applied = [dcm.BasicApplicationConfidentialityProfile]
        if self.retain_uids:
            applied.append(dcm.RetainUidsOption)
        if self.dates is DateHandling.RETAIN:
            applied.append(dcm.RetainLongitudinalTemporalInformationFullDatesOption)
        if self.dates is DateHandling.SHIFT:
            applied.append(dcm.RetainLongitudinalTemporalInformationModifiedDatesOption)
        if self.retain_patient_characteristics:
            applied.append(dcm.RetainPatientCharacteristicsOption)
        if self.retain_device_identity:
            applied.append(dcm.RetainDeviceIdentityOption)
        return [(code.value, code.meaning) for code in applied]

    def resolve(self, tag: BaseTag, vr: str) -> Action:
        """Return the action for the attribute ``tag`` of value representation ``vr``."""
        action = profile_action(tag)
        if action is None:
            if vr == "SQ":
                return Action.CLEAN_ITEMS
            if self.dates is DateHandling.SHIFT and vr in DATE_VRS:
                return Action.SHIFT_DATE
            return Action.KEEP
        if action is Action.REPLACE_UID and self.retain_uids:
            return Action.KEEP
        if self.retain_patient_characteristics and tag in PATIENT_CHARACTERISTICS:
            return Action.KEEP
        if self.retain_device_identity and tag in DEVICE_IDENTITY:
            return Action.CLEAN_ITEMS if vr == "SQ" else Action.KEEP
        if vr in TEMPORAL_VRS and tag not in BIRTH_DATE_AND_TIME:
            if self.dates is DateHandling.RETAIN:
                return Action.KEEP
            if self.dates is DateHandling.SHIFT:
                return Action.SHIFT_DATE if vr in DATE_VRS else Action.KEEP
        dummy_items = CODE_SEQUENCES | CONTENT_SEQUENCES
        if vr == "SQ" and action is Action.DUMMY and tag not in dummy_items:
            # A dummy sequence is the sequence with the profile applied to each item.
            return Action.CLEAN_ITEMS
        return action


def profile_action(tag: BaseTag) -> Action | None:
    """Return the action of the Basic profile for ``tag``, or None when the table omits it."""
    action = PROFILE_ACTIONS.get(int(tag))
    if action is not None:
        return action
    for group, element, group_mask, element_mask, masked_action in REPEATING_GROUP_ACTIONS:
        if tag.group & group_mask == group and tag.element & element_mask == element:
            return masked_action
    return None
