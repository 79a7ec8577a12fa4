"""The choice of index for a search, from its matching keys (see ``cirrus.index.models``).

A study search uses, in this order, the first of these that its keys allow:

1. StudyInstanceUID (one or a list): a GetItem per study;
2. PatientID without wildcards: ``by-patient``;
3. AccessionNumber without wildcards: ``by-accession``;
4. ModalitiesInStudy, or Modality in a series or instance search, without wildcards:
   ``by-modality``, one partition per modality, whose markers carry the study attributes;
5. PatientName starting with at least two ASCII characters before any wildcard: ``by-name``;
6. StudyDate, a date or a range: every shard of ``by-level`` with a sort key condition;
7. nothing: every shard of ``by-level``.

A StudyDate constraint narrows the sort key of choices 2 to 4 as well. The matcher checks every
candidate against every key afterwards, so a plan only has to read a superset of the matches.
Choice 7 with keys left that no index serves is not selective. The search then reads at most a
fixed number of candidates and adds a Warning when that limit stops it early.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cirrus.index.models import (
    NAME_BUCKET_LENGTH,
    STUDY,
    level_pks,
    normalize_name,
)
from cirrus.query.matching import Constraint
from cirrus.query.params import QidoQuery
from cirrus.query.sources import Condition, KeyQuery

_LAST: Final = "\uffff"

STUDY_UID: Final = "0020000D"
PATIENT_ID: Final = "00100020"
PATIENT_NAME: Final = "00100010"
ACCESSION_NUMBER: Final = "00080050"
STUDY_DATE: Final = "00080020"
MODALITIES_IN_STUDY: Final = "00080061"
MODALITY: Final = "00080060"
SERIES_UID: Final = "0020000E"


@dataclass(frozen=True)
class StudyPlan:
    """The reads that find the studies of a search.

    ``uids`` lists the studies to read by key; otherwise ``queries`` are merged. With
    ``markers`` the queries return ``by-modality`` markers, which carry the study's attributes
    in place of study records.
    ``selective`` is False when no index narrows the studies (choice 7 above).
    """

    kind: str
    uids: tuple[str, ...] | None = None
    queries: tuple[KeyQuery, ...] = ()
    markers: bool = False
    selective: bool = True


def plan_studies(site: str, query: QidoQuery, path_study: str | None) -> StudyPlan:
    """Return the plan that finds the studies a search can match."""
    if path_study is not None:
        return StudyPlan("uid", uids=(path_study,))
    uids = query.constraint(STUDY_UID)
    if uids is not None and not uids.is_universal:
        return StudyPlan("uid", uids=uids.values)
    date = date_condition(query.constraint(STUDY_DATE))
    patient = _exact(query.constraint(PATIENT_ID))
    if patient is not None:
        return StudyPlan("patient", queries=(KeyQuery("by_patient", f"{site}#{patient}", date),))
    accession = _exact(query.constraint(ACCESSION_NUMBER))
    if accession is not None:
        hash_key = f"{site}#{accession}"
        return StudyPlan("accession", queries=(KeyQuery("by_accession", hash_key, date),))
    modalities = _modalities(query)
    if modalities:
        queries = tuple(KeyQuery("by_modality", f"{site}#{m}", date) for m in modalities)
        return StudyPlan("modality", queries=queries, markers=True)
    prefix = name_prefix(query.constraint(PATIENT_NAME))
    if prefix is not None:
        bucket = f"{site}#{prefix[:NAME_BUCKET_LENGTH]}"
        condition = _begins_with(prefix)
        return StudyPlan("name", queries=(KeyQuery("by_name", bucket, condition),))
    shards = tuple(KeyQuery("by_level", pk, date) for pk in level_pks(site, STUDY))
    if date is not None:
        return StudyPlan("date", queries=shards)
    return StudyPlan("all", queries=shards, selective=False)


def date_condition(constraint: Constraint | None) -> Condition | None:
    """Return the condition on ``"{StudyDate}#{study}"`` sort keys a StudyDate key allows."""
    if constraint is None or constraint.is_universal or constraint.is_wildcard:
        return None
    value = constraint.single_value
    if value is not None:
        return _begins_with(f"{value}#")
    if not constraint.is_range:
        return None
    low, _, high = constraint.values[0].partition("-")
    if low and high:
        return lambda attribute: attribute.between(low, f"{high}#{_LAST}")
    if low:
        return lambda attribute: attribute >= low
    return lambda attribute: attribute <= f"{high}#{_LAST}"


def name_prefix(constraint: Constraint | None) -> str | None:
    """Return the normalized prefix that a PatientName key's matches all start with.

    Only the alphabetic name group is in ``by-name``. A key that could match through another
    group (any key with a non-ASCII character, or with ``=`` between groups) gets None, as
    does one with fewer than two characters before its first wildcard.
    """
    if constraint is None or constraint.is_universal or len(constraint.values) != 1:
        return None
    value = constraint.values[0]
    head = value
    for wildcard in ("*", "?"):
        head = head.split(wildcard, 1)[0]
    if "=" in value or not value.isascii() or len(head) < NAME_BUCKET_LENGTH:
        return None
    return normalize_name(head)


def _begins_with(prefix: str) -> Condition:
    return lambda attribute: attribute.startswith(prefix)


def _exact(constraint: Constraint | None) -> str | None:
    if constraint is None or constraint.is_universal:
        return None
    return constraint.single_value


def _modalities(query: QidoQuery) -> tuple[str, ...]:
    """Return the modalities every match must have one of, or () when not constrained."""
    for tag in (MODALITIES_IN_STUDY, MODALITY):
        constraint = query.constraint(tag)
        if constraint is None or constraint.is_universal or constraint.is_wildcard:
            continue
        if tag == MODALITY and query.level == STUDY:
            continue
        values = tuple(dict.fromkeys(value for value in constraint.values if value))
        if values:
            return values
    return ()
