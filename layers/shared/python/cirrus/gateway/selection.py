"""The instances that a C-MOVE or C-GET identifier selects, read from one site's index.

The gateway supports hierarchical retrieval only (PS3.4 C.4.2.2.1, C.4.3.2.1): the identifier
sets Query/Retrieve Level (0008,0052) and the unique key of that level and of each level above
it. The key of the retrieve level may be a list of values, so that one request moves several
studies, series or instances. The keys above it must be single values:

============  ===========================================  =================================
level         Patient Root                                 Study Root
============  ===========================================  =================================
PATIENT       PatientID                                    (not defined)
STUDY         PatientID, StudyInstanceUID                  StudyInstanceUID
SERIES        ... and SeriesInstanceUID                    StudyInstanceUID, SeriesInstanceUID
IMAGE         ... and SOPInstanceUID                       ... and SOPInstanceUID
============  ===========================================  =================================

Below the PATIENT level of the Patient Root model, PatientID may be absent or empty, because
many requesters send only the UIDs. When it is present, a study of another patient does not
match. Any other attribute of the identifier is ignored. Every lookup is in the caller's site
(the site leads every index key), so an identifier cannot select another site's instances.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from cirrus.errors import NotFoundError
from cirrus.index.reader import IndexReader, InstanceRef
from cirrus.storage.keys import is_conformant_uid

PATIENT_ROOT: Final = "PATIENT_ROOT"
STUDY_ROOT: Final = "STUDY_ROOT"
LEVELS: Final = ("PATIENT", "STUDY", "SERIES", "IMAGE")

# The unique key of each level: (keyword, tag).
_UNIQUE_KEYS: Final = {
    "PATIENT": ("PatientID", 0x00100020),
    "STUDY": ("StudyInstanceUID", 0x0020000D),
    "SERIES": ("SeriesInstanceUID", 0x0020000E),
    "IMAGE": ("SOPInstanceUID", 0x00080018),
}
_LEVEL_TAG: Final = 0x00080052


class IdentifierError(ValueError):
    """The identifier does not select instances the way its information model defines.

    ``tag`` is the offending element, for Offending Element (0000,0901).
    """

    def __init__(self, message: str, tag: int) -> None:
        super().__init__(message)
        self.tag = tag


@dataclass(frozen=True)
class RetrieveKeys:
    """The unique keys of a retrieve request: single values above ``level``, a list at it."""

    level: str
    patient_ids: tuple[str, ...] = ()
    studies: tuple[str, ...] = ()
    series: tuple[str, ...] = ()
    instances: tuple[str, ...] = ()


def parse_identifier(identifier: Dataset, model: str) -> RetrieveKeys:
    """Read the level and unique keys of ``identifier``; raise ``IdentifierError`` if invalid."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS:
        raise IdentifierError(
            f"QueryRetrieveLevel (0008,0052) {level!r} is invalid; use PATIENT, STUDY, "
            "SERIES or IMAGE",
            _LEVEL_TAG,
        )
    if model == STUDY_ROOT and level == "PATIENT":
        raise IdentifierError(
            "the Study Root model has no PATIENT level; use STUDY, SERIES or IMAGE", _LEVEL_TAG
        )
    depth = LEVELS.index(level)
    patient_ids: tuple[str, ...] = ()
    if model == PATIENT_ROOT:
        patient_ids = _values(identifier, "PATIENT", unique_key=depth == 0)
        if len(patient_ids) > 1 and depth > 0:
            raise _single_value_error("PATIENT", level)
    studies = _uid_values(identifier, "STUDY", level) if depth >= 1 else ()
    series = _uid_values(identifier, "SERIES", level) if depth >= 2 else ()
    instances = _uid_values(identifier, "IMAGE", level) if depth >= 3 else ()
    return RetrieveKeys(level, patient_ids, studies, series, instances)


def select_instances(reader: IndexReader, site: str, keys: RetrieveKeys) -> list[InstanceRef]:
    """Return the indexed instances of ``site`` that ``keys`` select, each once, in key order.

    Raises what the index raises when DynamoDB fails; a key that matches nothing adds nothing.
    """
    of_patients = [
        study for patient in keys.patient_ids for study in reader.patient_studies(site, patient)
    ]
    if keys.level == "PATIENT":
        studies = of_patients
    elif keys.patient_ids:
        of_patient = set(of_patients)
        studies = [study for study in keys.studies if study in of_patient]
    else:
        studies = list(keys.studies)
    refs: list[InstanceRef] = []
    for study in _unique(studies):
        refs.extend(_study_instances(reader, site, study, keys))
    seen: set[str] = set()
    selected = []
    for ref in refs:
        if ref.sop not in seen:
            seen.add(ref.sop)
            selected.append(ref)
    return selected


def _study_instances(
    reader: IndexReader, site: str, study: str, keys: RetrieveKeys
) -> list[InstanceRef]:
    if keys.level in ("PATIENT", "STUDY"):
        return _listed(reader, site, study, None)
    if keys.level == "SERIES":
        return [
            ref for series in _unique(keys.series) for ref in _listed(reader, site, study, series)
        ]
    refs = []
    for sop in _unique(keys.instances):
        try:
            refs.append(reader.instance(site, study, keys.series[0], sop))
        except NotFoundError:
            continue
    return refs


def _listed(reader: IndexReader, site: str, study: str, series: str | None) -> list[InstanceRef]:
    try:
        return reader.instances(site, study, series)
    except NotFoundError:
        return []


def _values(identifier: Dataset, level: str, *, unique_key: bool) -> tuple[str, ...]:
    """Return the values of the unique key of ``level``; require one when ``unique_key``."""
    keyword, tag = _UNIQUE_KEYS[level]
    value = identifier.get(keyword)
    if isinstance(value, MultiValue):
        values = tuple(str(item).strip() for item in value)
    elif value is None or str(value).strip() == "":
        values = ()
    else:
        values = (str(value).strip(),)
    values = tuple(item for item in values if item)
    if unique_key and not values:
        raise IdentifierError(
            f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X}) is required at the "
            f"{level} level; give one or more values",
            tag,
        )
    if any("*" in item or "?" in item for item in values):
        raise IdentifierError(
            f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X}) contains a wildcard; a retrieve "
            "takes exact values only",
            tag,
        )
    return values


def _uid_values(identifier: Dataset, level: str, retrieve_level: str) -> tuple[str, ...]:
    """Return the UIDs of the unique key of ``level``: one above ``retrieve_level``, any at it."""
    keyword, tag = _UNIQUE_KEYS[level]
    values = _values(identifier, level, unique_key=True)
    if level != retrieve_level and len(values) > 1:
        raise _single_value_error(level, retrieve_level)
    for uid in values:
        if not is_conformant_uid(uid):
            raise IdentifierError(
                f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X}) {uid!r} is not a valid UID",
                tag,
            )
    return values


def _single_value_error(level: str, retrieve_level: str) -> IdentifierError:
    keyword, tag = _UNIQUE_KEYS[level]
    return IdentifierError(
        f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X}) must be a single value in a "
        f"{retrieve_level} level retrieve; only the key of the retrieve level may list values",
        tag,
    )


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
