"""Attribute matching of PS3.4 C.2.2.2 on DICOM JSON, shared by QIDO-RS and C-FIND.

A ``Constraint`` is one matching key as received; ``matches`` applies it to the DICOM JSON
of a record. Supported: universal matching (an empty value), single value matching, list of
UID matching, wildcard matching with ``*`` and ``?``, and range matching for DA, TM and DT.
Person names match case-insensitively on each of their component groups.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Final

JsonDict = dict[str, Any]

RANGE_VRS: Final = frozenset({"DA", "TM", "DT"})
# Wildcards are not allowed for these VRs (PS3.4 C.2.2.2.4): numbers, dates, times and UIDs.
NO_WILDCARD_VRS: Final = frozenset({"DA", "TM", "DT", "UI", "DS", "IS", "SL", "SS", "UL", "US"})
NUMERIC_VRS: Final = frozenset({"DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"})
_PN_GROUPS: Final = ("Alphabetic", "Ideographic", "Phonetic")


@dataclass(frozen=True)
class Constraint:
    """One matching key: a tag, its VR and the requested values (several for a UID list).

    The tag of an attribute inside a sequence is the path of tags joined by "." (for
    ``RequestAttributesSequence.ScheduledProcedureStepID``, ``0040A370.00400009``). It matches
    when the attribute matches in any item (PS3.4 C.2.2.2.6).
    """

    tag: str
    vr: str
    values: tuple[str, ...] = field(default=())

    @property
    def top_level_tag(self) -> str:
        return self.tag.split(".", 1)[0]

    @property
    def is_universal(self) -> bool:
        # A value of only "*" is equivalent to universal matching (PS3.4 C.2.2.2.4), so it
        # also matches an empty or absent attribute.
        return all(value in ("", "*") for value in self.values)

    @property
    def is_range(self) -> bool:
        if self.vr not in RANGE_VRS or len(self.values) != 1:
            return False
        return split_range(self.values[0], self.vr) is not None

    @property
    def is_wildcard(self) -> bool:
        return self.vr not in NO_WILDCARD_VRS and any(
            "*" in value or "?" in value for value in self.values
        )

    @property
    def single_value(self) -> str | None:
        """Return the value of a single value match, or None for other kinds of matching."""
        if len(self.values) == 1 and not self.is_range and not self.is_wildcard:
            return self.values[0]
        return None

    @cached_property
    def _patterns(self) -> tuple[re.Pattern[str], ...]:
        flags = re.IGNORECASE if self.vr == "PN" else 0
        return tuple(re.compile(_wildcard_regex(value), flags) for value in self.values)

    def matches(self, record: JsonDict) -> bool:
        """Tell whether the attribute of ``record`` satisfies this constraint."""
        if self.is_universal:
            return True
        candidates = [
            text
            for attribute in _attributes_at(record, self.tag.split("."))
            for text in _values_as_text(attribute, self.vr)
        ]
        if self.vr == "PN":
            return self._matches_person_name(record)
        if self.is_range:
            low, high = _range_bounds(self.values[0], self.vr)
            return any(_in_range(value, low, high, self.vr) for value in candidates)
        if self.vr == "PN" or self.is_wildcard:
            return any(p.fullmatch(value) for p in self._patterns for value in candidates)
        if self.vr in NUMERIC_VRS:
            requested = {_number(value) for value in self.values}
            return any(_number(value) in requested for value in candidates)
        return any(value in self.values for value in candidates)

    @cached_property
    def _name_patterns(self) -> tuple[tuple[re.Pattern[str] | None, ...], ...]:
        """Return, per requested name, one pattern per component group; None matches any."""
        patterns = []
        for value in self.values:
            groups = value.split("=")
            patterns.append(
                tuple(
                    re.compile(_wildcard_regex(group.rstrip("^")), re.IGNORECASE) if group else None
                    for group in groups
                )
            )
        return tuple(patterns)

    def _matches_person_name(self, record: JsonDict) -> bool:
        """Match person names case-insensitively, group by group.

        A requested name without ``=`` matches a name if any of its groups matches. One with
        groups (``Yamada^Tarou=山田^太郎``) matches where every requested group matches the
        stored group in the same place. Trailing empty components (``Doe^Jane^^``) are ignored.
        """
        for attribute in _attributes_at(record, self.tag.split(".")):
            for value in attribute.get("Value", ()):
                if not isinstance(value, dict):
                    continue
                stored = [str(value.get(group) or "").rstrip("^") for group in _PN_GROUPS]
                for groups in self._name_patterns:
                    if len(groups) == 1:
                        pattern = groups[0]
                        if pattern is not None and any(
                            pattern.fullmatch(text) for text in stored if text
                        ):
                            return True
                    elif all(
                        pattern is None or (index < 3 and pattern.fullmatch(stored[index]))
                        for index, pattern in enumerate(groups)
                    ):
                        return True
        return False


def _number(value: str) -> float | str:
    """Return a numeric value as a float, so that '5', '5.0' and '5.000000' are equal."""
    try:
        return float(value)
    except ValueError:
        return value.strip()


def _wildcard_regex(value: str) -> str:
    parts = []
    for char in value:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return "".join(parts)


def _attributes_at(record: JsonDict, path: list[str]) -> list[JsonDict]:
    """Return the attributes at a tag path, one per sequence item on the way."""
    attribute = record.get(path[0])
    if attribute is None:
        return []
    if len(path) == 1:
        return [attribute]
    return [
        found
        for item in attribute.get("Value", ())
        if isinstance(item, dict)
        for found in _attributes_at(item, path[1:])
    ]


def _values_as_text(attribute: JsonDict | None, vr: str) -> list[str]:
    """Return the values of a DICOM JSON attribute as strings; person names per group."""
    if not attribute:
        return []
    texts: list[str] = []
    for value in attribute.get("Value", ()):
        if vr == "PN" and isinstance(value, dict):
            texts.extend(str(value[group]) for group in _PN_GROUPS if value.get(group))
        elif value is not None:
            texts.append(str(value))
    return texts


def split_range(value: str, vr: str) -> tuple[str, str] | None:
    """Return the two sides of a range, either may be empty, or None for a single value.

    A DT value may end with a negative offset from UTC (``-0500``), so a hyphen followed by
    four digits at the end that form an offset (hours 00 to 14) is not a range separator.
    """
    if vr != "DT":
        low, hyphen, high = value.partition("-")
        return (low, high) if hyphen else None
    for position, char in enumerate(value):
        if char != "-" or re.fullmatch(r"(0\d|1[0-4])[0-5]\d", value[position + 1 :]):
            continue
        low, high = value[:position], value[position + 1 :]
        if all(not side or _DT.fullmatch(side) for side in (low, high)):
            return low, high
    return None


def _range_bounds(value: str, vr: str) -> tuple[str | None, str | None]:
    low, high = split_range(value, vr) or (value, value)
    return (_normalize(low, vr) if low else None), (
        _normalize(high, vr, upper=True) if high else None
    )


def _normalize(value: str, vr: str, upper: bool = False) -> str:
    """Make DA, TM and DT values comparable as strings: digits only, padded to full length."""
    if vr == "TM":
        value = value.replace(":", "")
        width = 13  # HHMMSS.FFFFFF
        if "." not in value:
            value = value[:6]
        fill = "9" if upper else "0"
        head, _, fraction = value.partition(".")
        head = head.ljust(6, fill)
        return f"{head}.{fraction.ljust(6, fill)}"[:width]
    if vr == "DA":
        return value.replace(".", "")[:8]
    return _normalize_datetime(value, upper)


_DT: Final = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?"
)


def _normalize_datetime(value: str, upper: bool) -> str:
    """Return a DT value as ``YYYYMMDDHHMMSS.FFFFFF`` in UTC, so that DT values compare as text.

    Missing components are the start of the period a partial value names, or its end for the
    upper bound of a range. A value with a ``&ZZXX`` offset from UTC (PS3.5 Table 6.2-1) is
    shifted to UTC. One without an offset is compared as it is, as if it were in UTC.
    """
    found = _DT.fullmatch(value.strip())
    if found is None:
        return value
    year, month, day, hour, minute, second, fraction, offset = found.groups()
    try:
        if upper:
            month_number = int(month or 12)
            last_day = calendar.monthrange(int(year), month_number)[1]
            moment = datetime(
                int(year),
                month_number,
                int(day or last_day),
                int(hour or 23),
                int(minute or 59),
                int(second or 59),
                int((fraction or "").ljust(6, "9")),
            )
        else:
            moment = datetime(
                int(year),
                int(month or 1),
                int(day or 1),
                int(hour or 0),
                int(minute or 0),
                int(second or 0),
                int((fraction or "0").ljust(6, "0")),
            )
    except ValueError:
        return value
    if offset:
        sign = -1 if offset[0] == "-" else 1
        shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        moment -= sign * shift
    return moment.strftime("%Y%m%d%H%M%S.%f")


def _in_range(value: str, low: str | None, high: str | None, vr: str) -> bool:
    if not value:
        return False
    normalized = _normalize(value, vr)
    return (low is None or normalized >= low) and (high is None or normalized <= high)
