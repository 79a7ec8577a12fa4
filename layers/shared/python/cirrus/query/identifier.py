"""C-FIND Identifiers (PS3.4 C.4.1) in the query engine's terms, and its matches back as data sets.

``parse_identifier`` turns the Identifier of a C-FIND request into a ``FindRequest``: a
``QidoQuery`` for the engine that also serves QIDO-RS, the return keys, and the keys it could
not match. Every key with a value becomes a QIDO parameter named by its tag and parsed by
``parse_qido_params``, so both services read each kind of matching (single value, universal,
wildcard, range, list of UIDs, sequence) the same way. ``response_identifier`` builds the data
set of one match: each return key, with a zero-length value where the match has none, and
Retrieve AE Title and Instance Availability, which every response carries. A key that the
level cannot return (an attribute of a lower level, one the index does not keep, a private
one) is left out of the responses, whose status is then FF01 (PS3.4 C.2.2.1.3).

The levels map onto the index as follows. STUDY, SERIES and IMAGE are the QIDO levels STUDY,
SERIES and INSTANCE. The index keeps no patient records, so a PATIENT query is a study search
on the patient keys whose matches ``patient_matches`` groups by PatientID and
IssuerOfPatientID.

Queries are hierarchical (PS3.4 C.4.1.2.1): the Identifier must carry one value of the unique
key of each level above the query level, for instance StudyInstanceUID in a SERIES query of
the Study Root model. A request without one is rejected with ``IdentifierMismatchError``
(status A900), as the standard allows no other reading once relational queries are not
negotiated.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue

from cirrus.errors import InvalidRequestError
from cirrus.index.attributes import (
    INSTANCE_TAGS,
    PATIENT_TAGS,
    SERIES_TAGS,
    STUDY_TAGS,
    JsonDict,
    first_value,
)
from cirrus.query.matching import Constraint
from cirrus.query.params import INSTANCE, SERIES, STUDY, QidoQuery, parse_qido_params
from cirrus.query.qido import INSTANCE_COMPUTED, SERIES_COMPUTED, STUDY_COMPUTED

PATIENT_ROOT_FIND: Final = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND: Final = "1.2.840.10008.5.1.4.1.2.2.1"

# The levels of each information model, from the top (PS3.4 C.6.1 and C.6.2).
MODEL_LEVELS: Final = {
    PATIENT_ROOT_FIND: ("PATIENT", "STUDY", "SERIES", "IMAGE"),
    STUDY_ROOT_FIND: ("STUDY", "SERIES", "IMAGE"),
}
UNIQUE_KEYS: Final = {
    "PATIENT": "00100020",
    "STUDY": "0020000D",
    "SERIES": "0020000E",
    "IMAGE": "00080018",
}
_QIDO_LEVELS: Final = {"PATIENT": STUDY, "STUDY": STUDY, "SERIES": SERIES, "IMAGE": INSTANCE}

QUERY_RETRIEVE_LEVEL: Final = 0x00080052
SPECIFIC_CHARACTER_SET: Final = "00080005"
RETRIEVE_AE_TITLE: Final = "00080054"
INSTANCE_AVAILABILITY: Final = "00080056"
TIMEZONE_OFFSET: Final = "00080201"
# The DICOMweb URL of a match, which the gateway does not know, so it is not supported.
RETRIEVE_URL: Final = "00081190"
PATIENT_ID: Final = "00100020"
ISSUER_OF_PATIENT_ID: Final = "00100021"
PATIENT_STUDIES: Final = "00201200"
PATIENT_SERIES: Final = "00201202"
PATIENT_INSTANCES: Final = "00201204"
STUDY_SERIES: Final = "00201206"
STUDY_INSTANCES: Final = "00201208"

# The keys each level can match. An IMAGE query matches the whole stored metadata.
_STUDY_MATCHABLE: Final = (STUDY_TAGS | STUDY_COMPUTED) - {RETRIEVE_URL}
_SERIES_MATCHABLE: Final = _STUDY_MATCHABLE | ((SERIES_TAGS | SERIES_COMPUTED) - {RETRIEVE_URL})
_MATCHABLE: Final[dict[str, frozenset[str] | None]] = {
    "PATIENT": PATIENT_TAGS,
    "STUDY": _STUDY_MATCHABLE,
    "SERIES": _SERIES_MATCHABLE,
    "IMAGE": None,
}
# The attributes each level returns but does not match.
_RETURN_ONLY: Final = {
    "PATIENT": frozenset(
        {
            PATIENT_STUDIES,
            PATIENT_SERIES,
            PATIENT_INSTANCES,
            RETRIEVE_AE_TITLE,
            INSTANCE_AVAILABILITY,
        }
    ),
    "STUDY": frozenset({RETRIEVE_AE_TITLE}),
    "SERIES": frozenset({RETRIEVE_AE_TITLE}),
    "IMAGE": frozenset(),
}
# The attributes an instance record contains besides its full metadata.
_INSTANCE_INDEXED: Final = (
    _SERIES_MATCHABLE | INSTANCE_TAGS | INSTANCE_COMPUTED | {RETRIEVE_AE_TITLE, RETRIEVE_URL}
)
# The character set of a response that the request's character set cannot encode.
UTF8: Final = "ISO_IR 192"


class IdentifierError(Exception):
    """An Identifier that the SCP cannot run; ``offending`` are the tags at fault."""

    def __init__(self, message: str, offending: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.offending = offending


class IdentifierMismatchError(IdentifierError):
    """The Identifier does not fit the information model (status A900)."""


class UnprocessableIdentifierError(IdentifierError):
    """A key value cannot be decoded or is not a valid value of its VR (status C000)."""


@dataclass(frozen=True)
class ReturnKey:
    """One requested attribute. A sequence key lists the keys of its items.

    ``items`` is None to return whole items. ``item_constraints`` are the matching keys of a
    sequence item, with tag paths relative to the item: only the items they match are returned
    (PS3.4 C.2.2.2.6).
    """

    tag: str
    vr: str
    items: tuple[ReturnKey, ...] | None = None
    item_constraints: tuple[Constraint, ...] = ()


# Every response names where its instances can be retrieved and how fast (PS3.4 C.4.1.1.3.2).
_ALWAYS_RETURNED: Final = (
    ReturnKey(RETRIEVE_AE_TITLE, "AE"),
    ReturnKey(INSTANCE_AVAILABILITY, "CS"),
)


@dataclass(frozen=True)
class FindRequest:
    """A parsed C-FIND Identifier.

    ``unsupported`` names the keys that this level cannot match or return. They are left
    out of matching and of the responses, whose Pending status is then FF01.
    """

    level: str
    query: QidoQuery
    return_keys: tuple[ReturnKey, ...]
    unsupported: tuple[str, ...]
    charset: tuple[str, ...]


@dataclass
class _Keys:
    """The return keys, QIDO parameters and ignored keys of an Identifier or sequence item."""

    returned: list[ReturnKey]
    params: dict[str, list[str]]
    ignored: list[str]


def parse_identifier(identifier: Dataset, sop_class: str) -> FindRequest:
    """Read a C-FIND Identifier of the Patient Root or Study Root FIND model.

    Raises ``IdentifierMismatchError`` for a missing or unknown QueryRetrieveLevel and for a
    missing unique key of a level above, and ``UnprocessableIdentifierError`` for a key that
    cannot be decoded or whose value is invalid.
    """
    levels = MODEL_LEVELS[sop_class]
    level = _level(identifier, levels)
    charset = _charset(identifier)
    keys = _read_keys(identifier, "")
    unsupported = list(keys.ignored)
    # Unsupported keys are neither matched nor returned (PS3.4 C.2.2.1.3).
    returned = []
    for key in keys.returned:
        if _is_supported(level, key.tag):
            returned.append(key)
        else:
            unsupported.append(_keyword(key.tag))
    params = {
        path: value
        for path, value in keys.params.items()
        if _is_supported(level, path.split(".", 1)[0])
    }
    try:
        parsed = parse_qido_params(_QIDO_LEVELS[level], params)
    except InvalidRequestError as exc:
        raise UnprocessableIdentifierError(str(exc)) from exc
    # parse_qido_params drops tags that are not in the data dictionary.
    known = {constraint.tag for constraint in parsed.constraints}
    unsupported.extend(_keyword(path.split(".", 1)[0]) for path in params if path not in known)
    matchable = _MATCHABLE[level]
    constraints = []
    for constraint in parsed.constraints:
        if matchable is None or constraint.top_level_tag in matchable:
            constraints.append(constraint)
        else:
            unsupported.append(_keyword(constraint.top_level_tag))
    query = QidoQuery(level=_QIDO_LEVELS[level], constraints=tuple(constraints))
    _check_unique_keys(query, level, levels[: levels.index(level)])
    present = {key.tag for key in returned}
    returned.extend(key for key in _ALWAYS_RETURNED if key.tag not in present)
    if level == "IMAGE" and any(key.tag not in _INSTANCE_INDEXED for key in returned):
        # Attributes outside the instance record are in its stored metadata.
        query = QidoQuery(level=INSTANCE, constraints=query.constraints, include_all=True)
    return FindRequest(level, query, tuple(returned), tuple(dict.fromkeys(unsupported)), charset)


def _is_supported(level: str, tag: str) -> bool:
    """Tell whether a level can return the attribute ``tag`` (8 hex digits)."""
    if tag == RETRIEVE_URL:
        return False
    matchable = _MATCHABLE[level]
    return matchable is None or tag in matchable or tag in _RETURN_ONLY[level]


def _level(identifier: Dataset, levels: tuple[str, ...]) -> str:
    element = identifier.get(QUERY_RETRIEVE_LEVEL)
    value = str(element.value or "").strip() if element is not None else ""
    if not value:
        raise IdentifierMismatchError(
            "QueryRetrieveLevel (0008,0052) is missing", (QUERY_RETRIEVE_LEVEL,)
        )
    if value not in levels:
        raise IdentifierMismatchError(
            f"QueryRetrieveLevel {value[:16]!r} is not one of {', '.join(levels)}",
            (QUERY_RETRIEVE_LEVEL,),
        )
    return value


def _charset(identifier: Dataset) -> tuple[str, ...]:
    element = identifier.get(0x00080005)
    if element is None or element.is_empty:
        return ()
    value = element.value
    values = list(value) if isinstance(value, MultiValue | list) else [value]
    return tuple(str(item) for item in values)


def _read_keys(dataset: Dataset, prefix: str) -> _Keys:
    """Read the keys of a data set; ``prefix`` is the tag path of the enclosing sequence."""
    keys = _Keys([], {}, [])
    for element in _elements(dataset):
        tag = f"{element.tag:08X}"
        if element.tag == QUERY_RETRIEVE_LEVEL or tag == SPECIFIC_CHARACTER_SET:
            continue
        if element.tag.is_private or element.tag.element == 0:
            if not element.is_empty:
                keys.ignored.append(f"({element.tag.group:04X},{element.tag.element:04X})")
            continue
        path = f"{prefix}{tag}"
        if element.VR == "SQ":
            keys.returned.append(_sequence_key(element, tag, path, keys))
            continue
        # pydicom keeps an ambiguous dictionary VR such as "US or SS" for an empty value.
        keys.returned.append(ReturnKey(tag, element.VR.split(" or ")[0]))
        text = _text(element)
        if text is None:
            keys.ignored.append(_keyword(tag))
        elif text:
            keys.params[path] = [text]
    return keys


def _elements(dataset: Dataset) -> Iterator[DataElement]:
    """Yield the decoded elements of a data set, in tag order."""
    for tag in dataset.keys():
        try:
            yield dataset[tag]
        except Exception as exc:
            # pydicom decodes each element on first access and raises what its codec raises.
            raise UnprocessableIdentifierError(
                f"key ({tag.group:04X},{tag.element:04X}) cannot be decoded", (int(tag),)
            ) from exc


def _sequence_key(element: DataElement, tag: str, path: str, keys: _Keys) -> ReturnKey:
    """Read a sequence key: none or one item, whose keys with values are matching keys."""
    items = list(element.value or ())
    if not items:
        return ReturnKey(tag, "SQ")
    if len(items) > 1:
        raise IdentifierMismatchError(
            f"{_keyword(tag)} has {len(items)} items; a sequence key has one (PS3.4 C.2.2.2.6)",
            (int(tag, 16),),
        )
    inner = _read_keys(items[0], f"{path}.")
    keys.params.update(inner.params)
    keys.ignored.extend(inner.ignored)
    relative = len(path) + 1
    try:
        parsed = parse_qido_params(
            STUDY, {key[relative:]: value for key, value in inner.params.items()}
        )
    except InvalidRequestError as exc:
        raise UnprocessableIdentifierError(str(exc)) from exc
    return ReturnKey(tag, "SQ", tuple(inner.returned), parsed.constraints)


def _text(element: DataElement) -> str | None:
    """Return a key's value as QIDO writes it ("" for none), or None for a binary value."""
    if element.is_empty:
        return ""
    value: Any = element.value
    if isinstance(value, bytes | bytearray):
        return None
    if isinstance(value, MultiValue | list):
        return "\\".join(str(item) for item in value)
    return str(value)


def _check_unique_keys(query: QidoQuery, level: str, above: tuple[str, ...]) -> None:
    for upper in above:
        tag = UNIQUE_KEYS[upper]
        constraint = query.constraint(tag)
        value = constraint.single_value if constraint is not None else None
        # The query parser splits only UID lists into values, so a PatientID list arrives as
        # one value joined by backslashes. A backslash cannot occur inside LO (PS3.5 6.2).
        # UI takes no wildcards, so the parser reads "1.3*" as a single value. A unique key
        # above the query level must be one UID (PS3.4 C.4.1.2.2.1), so "*" and "?" are
        # rejected in every VR.
        if (
            constraint is None
            or constraint.is_universal
            or value is None
            or "\\" in value
            or "*" in value
            or "?" in value
        ):
            raise IdentifierMismatchError(
                f"a {level} query needs one {_keyword(tag)} value (hierarchical query)",
                (int(tag, 16),),
            )


def _keyword(tag: str) -> str:
    return keyword_for_tag(int(tag, 16)) or f"({tag[:4]},{tag[4:]})"


def patient_matches(studies: Iterable[JsonDict]) -> Iterator[JsonDict]:
    """Group matching studies into patients, with the patient-level counts.

    The patient attributes are those of the patient's first study in index order.
    NumberOfPatientRelatedStudies, -Series and -Instances count the studies that matched,
    which are all of the patient's studies when the study records agree on the patient keys.
    """
    # TODO: every matching patient stays in memory until the last study is read, which is a
    # lot for an unconstrained PATIENT query of a large archive.
    patients: dict[tuple[str, str], tuple[JsonDict, list[int]]] = {}
    for study in studies:
        key = (
            str(first_value(study, PATIENT_ID) or ""),
            str(first_value(study, ISSUER_OF_PATIENT_ID) or ""),
        )
        if key not in patients:
            attrs = {tag: value for tag, value in study.items() if tag in PATIENT_TAGS}
            patients[key] = (attrs, [0, 0, 0])
        counts = patients[key][1]
        counts[0] += 1
        counts[1] += int(first_value(study, STUDY_SERIES) or 0)
        counts[2] += int(first_value(study, STUDY_INSTANCES) or 0)
    for attrs, (studies_count, series_count, instance_count) in patients.values():
        yield {
            **attrs,
            PATIENT_STUDIES: {"vr": "IS", "Value": [studies_count]},
            PATIENT_SERIES: {"vr": "IS", "Value": [series_count]},
            PATIENT_INSTANCES: {"vr": "IS", "Value": [instance_count]},
            INSTANCE_AVAILABILITY: {"vr": "CS", "Value": ["ONLINE"]},
        }


def response_identifier(request: FindRequest, attrs: JsonDict, retrieve_ae_title: str) -> Dataset:
    """Build the Identifier of one match: the return keys, QueryRetrieveLevel and the charset.

    A return key without a value in the match has a zero-length value, except
    TimezoneOffsetFromUTC, which is then left out. SpecificCharacterSet is present only when
    a value is not ASCII (PS3.4 C.4.1.1.3.2). It is then the request's character set if that
    encodes every value, and UTF-8 otherwise.
    """
    computed = {**attrs, RETRIEVE_AE_TITLE: {"vr": "AE", "Value": [retrieve_ae_title]}}
    selected = {key.tag: _returned(key, computed) for key in request.return_keys}
    timezone = selected.get(TIMEZONE_OFFSET)
    if timezone is not None and "Value" not in timezone:
        del selected[TIMEZONE_OFFSET]
    ds = Dataset.from_json(selected)
    ds.QueryRetrieveLevel = request.level
    if not _is_ascii(selected):
        ds.SpecificCharacterSet = _response_charset(ds, request.charset)
    return ds


def _returned(key: ReturnKey, attrs: JsonDict) -> JsonDict:
    """Return the DICOM JSON of one return key: the match's value, or an empty attribute."""
    attribute = attrs.get(key.tag)
    if not attribute or "Value" not in attribute or "BulkDataURI" in attribute:
        return {"vr": attribute.get("vr", key.vr) if attribute else key.vr}
    if attribute.get("vr") != "SQ" or key.vr != "SQ":
        return attribute  # type: ignore[no-any-return]
    items = [
        item
        for item in attribute["Value"]
        if isinstance(item, dict) and all(c.matches(item) for c in key.item_constraints)
    ]
    if key.items is not None and key.items:
        items = [{sub.tag: _returned(sub, item) for sub in key.items} for item in items]
    return {"vr": "SQ", "Value": items}


def _is_ascii(value: Any) -> bool:
    if isinstance(value, str):
        return value.isascii()
    if isinstance(value, dict):
        return all(_is_ascii(item) for item in value.values())
    if isinstance(value, list):
        return all(_is_ascii(item) for item in value)
    return True


def _response_charset(ds: Dataset, requested: tuple[str, ...]) -> str | list[str]:
    if requested:
        charset: str | list[str] = requested[0] if len(requested) == 1 else list(requested)
        if _encodes(ds, charset):
            return charset
    return UTF8


def _encodes(ds: Dataset, charset: str | list[str]) -> bool:
    """Tell whether ``charset`` encodes every value of ``ds`` without replacing a character."""
    trial = Dataset(ds)
    trial.SpecificCharacterSet = charset
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    with warnings.catch_warnings():
        # pydicom warns, then replaces the character, when a codec cannot encode it.
        warnings.simplefilter("error")
        try:
            write_dataset(buffer, trial)
        except (UserWarning, UnicodeError, LookupError, ValueError):
            return False
    return True
