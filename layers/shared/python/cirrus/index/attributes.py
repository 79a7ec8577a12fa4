"""The attributes each index level keeps, by tag in DICOM JSON form.

The study and series records keep the attributes that a query at their level matches or returns
(PS3.4 C.6.1.1 and PS3.18 Table 10.6.3-3, -4 and -5) plus common descriptive ones. Instance
records keep their level's attributes too, and the whole instance metadata beside them.
"""

from __future__ import annotations

from typing import Any, Final

from pydicom.datadict import tag_for_keyword

JsonDict = dict[str, Any]


def _tags(*keywords: str) -> frozenset[str]:
    tags = []
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"unknown DICOM keyword {keyword}")
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
