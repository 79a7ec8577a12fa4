"""Parsing of QIDO-RS query parameters (PS3.18 8.3.4 and 10.6.1.2) into a ``QidoQuery``."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Final

from cirrus.errors import InvalidParameterError
from cirrus.query.matching import Constraint, split_range

STUDY: Final = "STUDY"
SERIES: Final = "SERIES"
INSTANCE: Final = "INSTANCE"

# The maximum number of matches in one response. A larger limit is cut to it with a warning.
MAX_LIMIT: Final = 1000
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
# Keys other than UIDs whose value may be a list that matches any of its items: ModalitiesInStudy,
# because a study search by several modalities is common.
_LIST_TAGS: Final = frozenset({"00080061"})
# List items are separated by commas or by backslashes, the DICOM value delimiter, which OHIF
# Viewer sends. Neither character can occur in a UID or a CS value.
_LIST_SEPARATOR: Final = re.compile(r"[,\\]")
# Values of DA, TM and DT matching keys (PS3.5 Table 6.2-1), each side of a range alike.
_DATE_TIME_FORMATS: Final = {
    "DA": re.compile(r"\d{8}"),
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
    "DT": re.compile(r"\d{4}(\d{2}){0,5}(\.\d{1,6})?([+-]\d{4})?"),
}
# The date and time digits of a DT value, before its fraction and UTC offset.
_DT_PARTS: Final = re.compile(r"(?P<digits>\d+)(\.\d+)?(?P<offset>[+-]\d{4})?")
# The written forms of each VR, for the message of an invalid value.
_DATE_TIME_HINTS: Final = {
    "DA": "YYYYMMDD, YYYYMMDD-YYYYMMDD, -YYYYMMDD or YYYYMMDD-",
    "TM": "HH, HHMM, HHMMSS or HHMMSS.FFFFFF, or a range of them such as 0800-1200",
    "DT": "YYYYMMDDHHMMSS.FFFFFF&ZZXX with trailing components optional, or a range",
}


class UnknownAttributeError(InvalidParameterError):
    """A name is neither a DICOM keyword nor the tag of a data dictionary attribute."""


@dataclass(frozen=True)
class QidoQuery:
    level: str
    constraints: tuple[Constraint, ...] = ()
    includefields: frozenset[str] = frozenset()
    include_all: bool = False
    limit: int = MAX_LIMIT
    offset: int = 0
    fuzzy: bool = False
    warnings: tuple[str, ...] = field(default=())

    def constraint(self, tag: str) -> Constraint | None:
        return next((c for c in self.constraints if c.tag == tag), None)


def resolve_attribute(name: str) -> tuple[str, str]:
    """Return the tag (8 hex digits) and VR of an attribute given by keyword or tag.

    A path of attributes joined by "." names an attribute inside a sequence (PS3.18 8.3.4.1);
    its tag is the path of tags joined by ".".
    """
    if "." in name:
        parts = [_resolve_one(part) for part in name.split(".")]
        if any(vr != "SQ" for _, vr in parts[:-1]):
            raise InvalidParameterError(
                f"attribute path {name!r} is invalid; each attribute before the last must be "
                "a sequence",
                parameter=".".join(_keyword(tag) for tag, _ in parts),
                kind="attribute path through an attribute that is not a sequence",
            )
        return ".".join(tag for tag, _ in parts), parts[-1][1]
    return _resolve_one(name)


def _resolve_one(name: str) -> tuple[str, str]:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    if _TAG.fullmatch(name):
        tag = int(name, 16)
    else:
        found = tag_for_keyword(name)
        if found is None:
            raise UnknownAttributeError(
                f"unknown attribute {name!r}; use a DICOM keyword or 8 hex digits of a tag",
                # A name that is no keyword is free text of the client, so it is not kept.
                parameter="(not a keyword)",
                kind="not a DICOM keyword or tag",
            )
        tag = found
    try:
        vr = dictionary_VR(tag)
    except KeyError as exc:
        raise UnknownAttributeError(
            f"attribute {name!r} is not in the DICOM data dictionary",
            parameter=name,
            kind="tag not in the data dictionary",
        ) from exc
    return f"{tag:08X}", vr.split(" or ")[0]


def parse_qido_params(level: str, params: dict[str, list[str]]) -> QidoQuery:
    """Build a query from decoded parameters; raises ``InvalidParameterError`` when invalid."""
    constraints: dict[str, Constraint] = {}
    includefields: set[str] = set()
    include_all = False
    limit, offset, fuzzy = MAX_LIMIT, 0, False
    warnings: list[str] = []
    for name, values in params.items():
        key = name.lower()
        if key == "limit":
            limit = _non_negative(name, values[-1])
            if limit == 0 or limit > MAX_LIMIT:
                warnings.append(f"limit {limit} is outside 1 to {MAX_LIMIT}; {MAX_LIMIT} is used")
                limit = MAX_LIMIT
        elif key == "offset":
            offset = _non_negative(name, values[-1])
        elif key == "fuzzymatching":
            if values[-1].lower() not in ("true", "false"):
                raise InvalidParameterError(
                    f"fuzzymatching must be true or false, not {values[-1]!r}",
                    parameter="fuzzymatching",
                    kind="not true or false",
                )
            fuzzy = values[-1].lower() == "true"
            if fuzzy:
                warnings.append(
                    "fuzzymatching is not supported; person names match case-insensitively "
                    "with wildcards only"
                )
        elif key == "includefield":
            for value in values:
                for item in filter(None, (part.strip() for part in value.split(","))):
                    if item.lower() == "all":
                        include_all = True
                    else:
                        try:
                            includefields.add(resolve_attribute(item)[0])
                        except UnknownAttributeError as exc:
                            warnings.append(f"includefield {item!r} was ignored: {exc}")
        else:
            try:
                tag, vr = resolve_attribute(name)
            except UnknownAttributeError as exc:
                # Ignored with a Warning rather than rejected, so that cache busters such as
                # "_=123" work. A misspelled keyword is reported the same way.
                warnings.append(f"query parameter {name!r} was ignored: {exc}")
                continue
            constraints[tag] = _constraint(tag, vr, values, constraints.get(tag))
    return QidoQuery(
        level=level,
        constraints=tuple(constraints.values()),
        includefields=frozenset(includefields),
        include_all=include_all,
        limit=limit,
        offset=offset,
        fuzzy=fuzzy,
        warnings=tuple(warnings),
    )


def _constraint(tag: str, vr: str, values: list[str], previous: Constraint | None) -> Constraint:
    """Merge repeated keys and UID lists into one list of values."""
    merged = list(previous.values) if previous else []
    is_list = vr == "UI" or tag in _LIST_TAGS
    for value in values:
        parts = _LIST_SEPARATOR.split(value) if is_list else [value]
        merged.extend(part.strip() if is_list else part for part in parts)
    if len(merged) > 1 and not is_list:
        merged = [m for m in merged if m] or [""]
        if len(merged) > 1:
            keyword = _keyword(tag)
            raise InvalidParameterError(
                f"{keyword} is given {len(merged)} times; only UIDs may be matched as a list",
                parameter=keyword,
                kind="repeated",
            )
    if vr in _DATE_TIME_FORMATS and merged[0]:
        _check_date_time(tag, vr, merged[0])
    return Constraint(tag=tag, vr=vr, values=tuple(merged))


def _check_date_time(tag: str, vr: str, value: str) -> None:
    """Raise ``InvalidParameterError`` unless ``value`` is a DA, TM or DT value or range."""
    keyword = _keyword(tag)
    pattern = _DATE_TIME_FORMATS[vr]
    if vr == "DT":
        sides = split_range(value, vr)
        parts = list(sides) if sides is not None else [value]
    else:
        parts = value.split("-")
    well_formed = all(
        not part or (pattern.fullmatch(part) and _in_calendar(vr, part)) for part in parts
    )
    if len(parts) > 2 or not any(parts) or not well_formed:
        raise InvalidParameterError(
            f"{keyword} value {value!r} is not a valid {vr} value or range; write "
            f"{_DATE_TIME_HINTS[vr]}",
            parameter=keyword,
            kind=f"invalid {vr} value or range",
        )
    if len(parts) == 2 and parts[0] and parts[1] and parts[0] > parts[1]:
        raise InvalidParameterError(
            f"{keyword} range {value!r} ends before it starts",
            parameter=keyword,
            kind=f"{vr} range ends before it starts",
        )


def _in_calendar(vr: str, value: str) -> bool:
    """Tell whether a well-formed DA, TM or DT value names a real date and time of day.

    Hours 00 to 23, minutes 00 to 59 and seconds 00 to 60 (a leap second) are the ranges of
    the TM and DT checks in pydicom 3 (``pydicom.valuerep``). UTC offsets from -1200 to +1400
    cover every time zone in use.
    """
    if vr == "DA":
        return _is_date(value[:4], value[4:6], value[6:8])
    if vr == "TM":
        return _is_time(value[:2], value[2:4], value[4:6])
    match = _DT_PARTS.fullmatch(value)
    if match is None:
        return False
    digits, offset = match["digits"], match["offset"]
    date_valid = _is_date(digits[:4], digits[4:6], digits[6:8])
    time_valid = _is_time(digits[8:10], digits[10:12], digits[12:14])
    offset_valid = offset is None or (-1200 <= int(offset) <= 1400 and int(offset[3:]) <= 59)
    return date_valid and time_valid and offset_valid


def _is_date(year: str, month: str, day: str) -> bool:
    """Tell whether the given components, of which month and day may be empty, form a date."""
    try:
        datetime.date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return False
    return True


def _is_time(hour: str, minute: str, second: str) -> bool:
    """Tell whether the given components, each possibly empty, form a time of day."""
    return int(hour or 0) <= 23 and int(minute or 0) <= 59 and int(second or 0) <= 60


def _keyword(tag_path: str) -> str:
    """Return the keywords of a tag path joined by ".", for messages."""
    from pydicom.datadict import keyword_for_tag

    return ".".join(keyword_for_tag(int(tag, 16)) or tag for tag in tag_path.split("."))


def _non_negative(name: str, value: str) -> int:
    # str.isdigit alone also accepts digits such as "²" that int() rejects.
    if not (value.isascii() and value.isdigit()):
        raise InvalidParameterError(
            f"{name} must be a non-negative integer, not {value!r}",
            parameter=name.lower(),
            kind="not a non-negative integer",
        )
    return int(value)
