"""The attributes each index level keeps, by tag in DICOM JSON form.

The study and series records keep the attributes that a query at their level matches or returns
(PS3.4 C.6.1.1 and PS3.18 Table 10.6.3-3, -4 and -5) plus common descriptive ones. Instance
records keep their level's attributes too, and the whole instance metadata beside them.
"""

from __future__ import annotations

from typing import Any, Final

JsonDict = dict[str, Any]

# The tag of each keyword below (PS3.6 6), written out because a lookup in pydicom's data
# dictionary would import pydicom, and with it numpy and the codecs where installed, when this
# module is imported. tests/unit/test_lazy_imports.py checks the table against that dictionary.
_KEYWORD_TAGS: Final = {
    "PatientName": 0x00100010,
    "PatientID": 0x00100020,
    "IssuerOfPatientID": 0x00100021,
    "OtherPatientIDsSequence": 0x00101002,
    "PatientBirthDate": 0x00100030,
    "PatientBirthTime": 0x00100032,
    "PatientSex": 0x00100040,
    "PatientComments": 0x00104000,
    "EthnicGroup": 0x00102160,
    "SpecificCharacterSet": 0x00080005,
    "StudyDate": 0x00080020,
    "StudyTime": 0x00080030,
    "AccessionNumber": 0x00080050,
    "IssuerOfAccessionNumberSequence": 0x00080051,
    "ReferringPhysicianName": 0x00080090,
    "TimezoneOffsetFromUTC": 0x00080201,
    "StudyDescription": 0x00081030,
    "StudyInstanceUID": 0x0020000D,
    "StudyID": 0x00200010,
    "NameOfPhysiciansReadingStudy": 0x00081060,
    "AdmittingDiagnosesDescription": 0x00081080,
    "PatientAge": 0x00101010,
    "PatientSize": 0x00101020,
    "PatientWeight": 0x00101030,
    "Modality": 0x00080060,
    "SeriesDescription": 0x0008103E,
    "SeriesNumber": 0x00200011,
    "SeriesInstanceUID": 0x0020000E,
    "SeriesDate": 0x00080021,
    "SeriesTime": 0x00080031,
    "PerformedProcedureStepStartDate": 0x00400244,
    "PerformedProcedureStepStartTime": 0x00400245,
    "RequestAttributesSequence": 0x00400275,
    "BodyPartExamined": 0x00180015,
    "Laterality": 0x00200060,
    "InstitutionName": 0x00080080,
    "StationName": 0x00081010,
    "Manufacturer": 0x00080070,
    "ManufacturerModelName": 0x00081090,
    "ProtocolName": 0x00181030,
    "OperatorsName": 0x00081070,
    "PerformingPhysicianName": 0x00081050,
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "InstanceNumber": 0x00200013,
    "ContentDate": 0x00080023,
    "ContentTime": 0x00080033,
    "AcquisitionNumber": 0x00200012,
    "ImageType": 0x00080008,
    "Rows": 0x00280010,
    "Columns": 0x00280011,
    "BitsAllocated": 0x00280100,
    "NumberOfFrames": 0x00280008,
}


def _tags(*keywords: str) -> frozenset[str]:
    tags = []
    for keyword in keywords:
        tag = _KEYWORD_TAGS.get(keyword)
        if tag is None:
            raise ValueError(f"unknown DICOM keyword {keyword}; add its tag to _KEYWORD_TAGS")
        tags.append(f"{tag:08X}")
    return frozenset(tags)


PATIENT_TAGS: Final = _tags(
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "OtherPatientIDsSequence",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "PatientComments",
    "EthnicGroup",
)

STUDY_TAGS: Final = PATIENT_TAGS | _tags(
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "StudyDescription",
    "StudyInstanceUID",
    "StudyID",
    "NameOfPhysiciansReadingStudy",
    "AdmittingDiagnosesDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
)

SERIES_TAGS: Final = _tags(
    "SpecificCharacterSet",
    "TimezoneOffsetFromUTC",
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesInstanceUID",
    "SeriesDate",
    "SeriesTime",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
    "BodyPartExamined",
    "Laterality",
    "InstitutionName",
    "StationName",
    "Manufacturer",
    "ManufacturerModelName",
    "ProtocolName",
    "OperatorsName",
    "PerformingPhysicianName",
)

INSTANCE_TAGS: Final = _tags(
    "SpecificCharacterSet",
    "TimezoneOffsetFromUTC",
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "ContentDate",
    "ContentTime",
    "AcquisitionNumber",
    "ImageType",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)


def select(metadata: JsonDict, tags: frozenset[str]) -> JsonDict:
    """Return the attributes of ``metadata`` whose tags are in ``tags``, in tag order."""
    return {tag: metadata[tag] for tag in sorted(tags) if tag in metadata}


def first_value(metadata: JsonDict, tag: str) -> Any:
    """Return the first value of an attribute, or None when it is absent or empty."""
    values = metadata.get(tag, {}).get("Value")
    return values[0] if values else None
