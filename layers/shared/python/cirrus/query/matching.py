"""Attribute matching of PS3.4 C.2.2.2 on DICOM JSON, shared by QIDO-RS and C-FIND.

A ``Constraint`` is one matching key as received; ``matches`` applies it to the DICOM JSON
of a record. Supported: universal matching (an empty value), single value matching, list of
UID matching, wildcard matching with ``*`` and ``?``, and range matching for DA, TM and DT.
Person names match case-insensitively on each of their component groups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
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
        return self.vr in RANGE_VRS and len(self.values) == 1 and "-" in self.values[0]

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
        if self.is_range:
            low, high = _range_bounds(self.values[0], self.vr)
            return any(_in_range(value, low, high, self.vr) for value in candidates)
        if self.vr == "PN" or self.is_wildcard:
            return any(p.fullmatch(value) for p in self._patterns for value in candidates)
        if self.vr in NUMERIC_VRS:
            requested = {_number(value) for value in self.values}
            return any(_number(value) in requested for value in candidates)
        return any(value in self.values for value in candidates)


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


def _range_bounds(value: str, vr: str) -> tuple[str | None, str | None]:
    low, _, high = value.partition("-")
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
    # DT: YYYYMMDDHHMMSS.FFFFFF&ZZXX; the offset is dropped. TODO: compare DT in UTC.
    core = re.split(r"[+&]|(?<=\d)-(?=\d{4}$)", value)[0]
    head, _, fraction = core.partition(".")
    fill = "9" if upper else "0"
    return f"{head.ljust(14, fill)}.{fraction.ljust(6, fill)}"


def _in_range(value: str, low: str | None, high: str | None, vr: str) -> bool:
    if not value:
        return False
    normalized = _normalize(value, vr)
    return (low is None or normalized >= low) and (high is None or normalized <= high)
