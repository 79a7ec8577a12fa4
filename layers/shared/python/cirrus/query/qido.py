"""QIDO-RS searches (PS3.18 10.6) on the DynamoDB index.

Each search reads candidates with DynamoDB Queries and GetItems that ``cirrus.query.plan``
chooses from its matching keys (never a Scan), applies every key to each candidate with
``cirrus.query.matching``, pages the matches with ``offset`` and ``limit``, and returns the
requested attributes of each level.

A series or instance search first finds its studies the way a study search would, then reads
the series or instances of each study from the study's partition. Without any study-level
key that an index serves, it lists the level's records from the ``by-level`` shards instead.
An instance search by SOP Instance UID finds each instance through its claim
(``cirrus.index.claims``). A search whose keys no index serves reads at most
``UNINDEXED_READ_LIMIT`` candidates and adds a Warning when that limit cut it short.
"""

from __future__ import annotations

import heapq
import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Final

from cirrus.index.attributes import INSTANCE_TAGS, SERIES_TAGS, STUDY_TAGS, JsonDict
from cirrus.index.claims import CLAIM, claim_pk
from cirrus.index.models import (
    INSTANCE,
    SERIES,
    STUDY,
    IndexRecord,
    get_record,
    instance_sk,
    level_pks,
    series_sk,
    study_pk,
)
from cirrus.query.matching import Constraint
from cirrus.query.params import MAX_LIMIT, QidoQuery, parse_qido_params
from cirrus.query.plan import SERIES_UID, StudyPlan, plan_studies
from cirrus.query.sources import KeyQuery, ReadCap, distinct_studies, merged
from cirrus.storage.keys import InstanceKey

# The maximum number of candidates a search without a usable index reads before it stops with a
# Warning.
UNINDEXED_READ_LIMIT: Final = 2000
SOP_UID: Final = "00080018"

# Attributes computed from the index rather than stored (PS3.18 Table 10.6.3-3 to -5).
STUDY_COMPUTED: Final = frozenset(
    {"00080056", "00080061", "00080062", "00081190", "00201206", "00201208"}
)
SERIES_COMPUTED: Final = frozenset({"00080056", "00081190", "00201209"})
INSTANCE_COMPUTED: Final = frozenset({"00080056", "00081190"})

# Default return attributes per level (PS3.18 Table 10.6.3-3, -4 and -5).
STUDY_DEFAULTS: Final = frozenset(
    {
        "00080005", "00080020", "00080030", "00080050", "00080056", "00080061", "00080090",
        "00080201", "00081190", "00100010", "00100020", "00100030", "00100040", "0020000D",
        "00200010", "00201206", "00201208",
    }
)  # fmt: skip
SERIES_DEFAULTS: Final = frozenset(
    {
        "00080005", "00080060", "00080201", "0008103E", "00081190", "0020000E", "00200011",
        "00201209", "00400244", "00400245", "00400275",
    }
)  # fmt: skip
INSTANCE_DEFAULTS: Final = frozenset(
    {
        "00080005", "00080016", "00080018", "00080056", "00080201", "00081190", "00200013",
        "00280010", "00280011", "00280100", "00280008",
    }
)  # fmt: skip

# The position of a match in a search's order (see ``_Search.ordered``).
OrderKey = tuple[int | str, ...]

_STUDY_LEVEL: Final = STUDY_TAGS | STUDY_COMPUTED
_SERIES_LEVEL: Final = SERIES_TAGS | SERIES_COMPUTED


@dataclass
class QidoResult:
    """The matches of one page, the Warning texts, and the site of each match."""

    matches: list[JsonDict]
    warnings: list[str] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)


@dataclass
class _Candidate:
    """One record to match, with the attributes of its own level and the levels above."""

    record: IndexRecord
    attrs: JsonDict
    needs_metadata: bool = False


class QidoService:
    def __init__(self, model: type[IndexRecord]) -> None:
        self._model = model

    def search(
        self,
        *,
        site: str,
        level: str,
        params: dict[str, list[str]],
        base_url: str,
        study: str | None = None,
        series: str | None = None,
    ) -> QidoResult:
        """Run one QIDO-RS search; ``study`` and ``series`` come from the resource path."""
        return self.search_sites(
            sites=(site,), level=level, params=params, base_url=base_url, study=study, series=series
        )

    def search_sites(
        self,
        *,
        sites: Sequence[str],
        level: str,
        params: dict[str, list[str]],
        base_url: str,
        study: str | None = None,
        series: str | None = None,
    ) -> QidoResult:
        """Run one QIDO-RS search in each of ``sites`` and page the merged matches.

        Each site is searched on its own index partitions, as in a search of one site, and
        the matches of all sites are merged in the order that one site's search returns them
        (index order, see ``_Search.ordered``). A tie, such as one Study Instance UID in two
        sites, goes to the site listed first. While the index does not change, that order is
        the same on every request, so ``offset`` pages the merged result without gaps or
        repeats.

        With several sites, each match's RetrieveURL has the prefix ``/sites/{site}`` after
        ``base_url``, so that it names the site it came from. With no sites, the parameters
        are still checked, and the result is empty.
        """
        query = parse_qido_params(level, params)
        needed = query.offset + query.limit + 1
        qualify = len(sites) > 1
        runs = [
            _Search(
                self._model,
                site,
                query,
                f"{base_url.rstrip('/')}/sites/{site}" if qualify else base_url,
                study,
                series,
                needed,
            )
            for site in sites
        ]
        ordered = heapq.merge(*(_tagged(run) for run in runs), key=lambda item: item[0])
        page = list(islice(ordered, query.offset, needed))
        warnings = list(query.warnings) + usable_constraints(query)[1]
        if len(page) > query.limit:
            page = page[: query.limit]
            warnings.append(
                f"the result is cut to the first {query.limit} of more matches; "
                f"ask with offset={query.offset + query.limit} for the next page"
            )
        if any(run.cap.reached for run in runs):
            warnings.append(
                f"no index serves these matching keys, so the search read only the first "
                f"{UNINDEXED_READ_LIMIT} {level.lower()} records and the result may be "
                "incomplete; add PatientID, AccessionNumber, StudyDate, ModalitiesInStudy, "
                "a PatientName prefix or StudyInstanceUID to search them all"
            )
        matches = [run.project(candidate) for _, run, candidate in page]
        return QidoResult(matches, warnings, [run.site for _, run, _ in page])

    def all_matches(self, *, site: str, query: QidoQuery) -> MatchStream:
        """Return every match of ``query``, without ``offset`` and ``limit``, for C-FIND.

        ``query.include_all`` makes an instance search read the whole metadata of each
        candidate, so that its attributes outside the index can be matched and returned.
        """
        return MatchStream(_Search(self._model, site, query, "", None, None, MAX_LIMIT))


class MatchStream:
    """The matches of one search in index order, each as its attributes in DICOM JSON.

    Each match carries the stored and computed attributes of its level and of the levels
    above. Reading is lazy: each DynamoDB page is read when the iteration reaches it.
    """

    def __init__(self, search: _Search) -> None:
        self._search = search

    def __iter__(self) -> Iterator[JsonDict]:
        for candidate in self._search.matches():
            yield candidate.attrs

    @property
    def capped(self) -> bool:
        """Whether ``UNINDEXED_READ_LIMIT`` stopped the candidates of an unindexed search."""
        return self._search.cap.reached


class _Search:
    """The state of one search: its query, scope, plan and the records read so far."""

    def __init__(
        self,
        model: type[IndexRecord],
        site: str,
        query: QidoQuery,
        base_url: str,
        study: str | None,
        series: str | None,
        needed: int,
    ) -> None:
        self.model = model
        self.site = site
        self.query = query
        self.base_url = base_url.rstrip("/")
        self.study = study
        self.series = series
        self.needed = needed
        self.cap = ReadCap(UNINDEXED_READ_LIMIT)
        self._studies: dict[str, IndexRecord | None] = {}
        self._series: dict[tuple[str, str], IndexRecord | None] = {}
        self.constraints = usable_constraints(query)[0]
        self.plan: StudyPlan = plan_studies(site, query, study)

    # Which constraints apply at this level.

    def _study_constraints(self) -> list[Constraint]:
        return [
            c for c in self.constraints if c.top_level_tag in _STUDY_LEVEL and not c.is_universal
        ]

    def _constrained(self) -> bool:
        return any(not c.is_universal for c in self.constraints)

    # Candidates, each read by a DynamoDB Query or GetItem.

    def matches(self) -> Iterator[_Candidate]:
        for _, candidate in self.ordered():
            yield candidate

    def ordered(self) -> Iterator[tuple[OrderKey, _Candidate]]:
        """Yield each match with its key in the search's order, ascending.

        The keys are what the plan's reads are sorted by: the position in the requested UIDs,
        or the sort key of the index read, then, for a series or instance read from its
        study's partition, the record's sort key. Every site's search of one query has the
        same plan, so the keys of two sites compare in the same order.
        """
        for key, candidate in self._candidates():
            if candidate.needs_metadata:
                candidate.attrs = {**_full_metadata(candidate.record), **candidate.attrs}
            if all(constraint.matches(candidate.attrs) for constraint in self.constraints):
                yield key, candidate

    def _candidates(self) -> Iterator[tuple[OrderKey, _Candidate]]:
        if self.query.level == STUDY:
            for key, record in self._study_records():
                yield key, _Candidate(record, self._study_attrs(record))
        elif self.query.level == SERIES:
            for key, record in self._series_records():
                yield key, _Candidate(record, self._series_attrs(record))
        else:
            needs = self.query.include_all or any(
                c.top_level_tag
                not in _STUDY_LEVEL | _SERIES_LEVEL | INSTANCE_TAGS | INSTANCE_COMPUTED
                and not c.is_universal
                for c in self.constraints
            )
            for key, record in self._instance_records():
                yield key, _Candidate(record, self._instance_attrs(record), needs_metadata=needs)

    def _study_records(self) -> Iterator[tuple[OrderKey, IndexRecord]]:
        """Yield the study records the plan reads, in its order, each with its order key."""
        plan = self.plan
        if plan.uids is not None:
            for position, uid in enumerate(plan.uids):
                record = self._study(uid)
                if record is not None:
                    yield (position,), record
            return
        capped = not plan.selective and self._constrained()
        # A capped search filters most of what it reads, so it reads in large pages.
        needed = UNINDEXED_READ_LIMIT if capped else self.needed
        records = merged(self.model, list(plan.queries), needed)
        if plan.markers:
            records = distinct_studies(records)
        if capped:
            records = self.cap.apply(records)
        attribute = plan.queries[0].range_attribute if plan.queries else "sk"
        for record in records:
            self._studies.setdefault(_study_uid(record), record)
            yield (str(getattr(record, attribute)),), record

    def _studies_in_scope(self) -> Iterator[tuple[OrderKey, str]] | None:
        """Yield the studies a series or instance search is limited to; None for all."""
        if not self.plan.selective:
            return None
        constraints = self._study_constraints()
        return (
            (key, _study_uid(record))
            for key, record in self._study_records()
            if all(c.matches(self._study_attrs(record)) for c in constraints)
        )

    def _level_listing(self, level: str) -> Iterator[tuple[OrderKey, IndexRecord]]:
        """Yield every record of a level from the ``by-level`` shards, capped if constrained."""
        queries = [KeyQuery("by_level", pk) for pk in level_pks(self.site, level)]
        if not self._constrained():
            records = merged(self.model, queries, self.needed)
        else:
            records = self.cap.apply(merged(self.model, queries, UNINDEXED_READ_LIMIT))
        return (((str(record.level_sk),), record) for record in records)

    def _series_records(self) -> Iterator[tuple[OrderKey, IndexRecord]]:
        studies = self._studies_in_scope()
        if studies is None:
            yield from self._level_listing(SERIES)
            return
        for key, uid in studies:
            for record in self.model.query(
                study_pk(self.site, uid), self.model.sk.startswith(f"{SERIES}#")
            ):
                yield (*key, record.sk), record

    def _instance_records(self) -> Iterator[tuple[OrderKey, IndexRecord]]:
        studies = self._studies_in_scope()
        if studies is None:
            claimed = self._claimed_instances()
            if claimed is not None:
                yield from claimed
                return
            yield from self._level_listing(INSTANCE)
            return
        series = self.series
        if series is None:
            constraint = self.query.constraint(SERIES_UID)
            if constraint is not None and constraint.single_value is not None:
                series = constraint.single_value
        prefix = f"{INSTANCE}#{series}#" if series else f"{INSTANCE}#"
        for key, uid in studies:
            for record in self.model.query(
                study_pk(self.site, uid), self.model.sk.startswith(prefix)
            ):
                yield (*key, record.sk), record

    def _claimed_instances(self) -> Iterator[tuple[OrderKey, IndexRecord]] | None:
        """Yield the instances that SOPInstanceUID names, found through their claims.

        The claim of each SOP Instance UID (``cirrus.index.claims``) names the study and series
        of its object, so a search by SOP Instance UID reads one claim and one instance record
        per requested UID instead of listing every instance. Returns None when the query has no
        SOPInstanceUID values to look up. A claimed instance that ingest has not indexed yet is
        not found, as in any other search.
        """
        constraint = self.query.constraint(SOP_UID)
        if constraint is None or constraint.is_universal or constraint.is_wildcard:
            return None
        return self._read_claimed(constraint.values)

    def _read_claimed(self, uids: Sequence[str]) -> Iterator[tuple[OrderKey, IndexRecord]]:
        for position, uid in enumerate(dict.fromkeys(uids)):
            claim = get_record(self.model, claim_pk(self.site, uid), CLAIM)
            if claim is None or not claim.object_key:
                continue
            try:
                key = InstanceKey.parse(claim.object_key)
            except ValueError:
                continue
            sk = instance_sk(key.series, key.sop)
            record = get_record(self.model, study_pk(self.site, key.study), sk)
            if record is not None:
                yield (position,), record

    def _study(self, uid: str) -> IndexRecord | None:
        if uid not in self._studies:
            self._studies[uid] = get_record(self.model, study_pk(self.site, uid), STUDY)
        return self._studies[uid]

    def _series_record(self, study: str, series: str) -> IndexRecord | None:
        key = (study, series)
        if key not in self._series:
            self._series[key] = get_record(
                self.model, study_pk(self.site, study), series_sk(series)
            )
        return self._series[key]

    # Attributes of each level, stored and computed.

    def _study_attrs(self, record: IndexRecord) -> JsonDict:
        study = record.pk.split("#", 1)[1]
        computed = {
            "00080056": _value("CS", "ONLINE"),
            "00080061": _values("CS", sorted(record.modalities or ())),
            "00080062": _values("UI", sorted(record.sop_classes or ())),
            "00081190": _value("UR", f"{self.base_url}/studies/{study}"),
            "00201206": _value("IS", int(record.series_count or 0)),
            "00201208": _value("IS", int(record.instance_count or 0)),
        }
        return {**record.attrs, **computed}

    def _series_attrs(self, record: IndexRecord) -> JsonDict:
        study = record.pk.split("#", 1)[1]
        series = record.sk.split("#", 1)[1]
        study_record = self._study(study)
        above = self._study_attrs(study_record) if study_record else {}
        computed = {
            "00080056": _value("CS", "ONLINE"),
            "00081190": _value("UR", f"{self.base_url}/studies/{study}/series/{series}"),
            "00201209": _value("IS", int(record.instance_count or 0)),
        }
        return {**above, **record.attrs, **computed}

    def _instance_attrs(self, record: IndexRecord) -> JsonDict:
        study = record.pk.split("#", 1)[1]
        _, series, sop = record.sk.split("#", 2)
        series_record = self._series_record(study, series)
        above = self._series_attrs(series_record) if series_record else {}
        url = f"{self.base_url}/studies/{study}/series/{series}/instances/{sop}"
        computed = {"00080056": _value("CS", "ONLINE"), "00081190": _value("UR", url)}
        return {**above, **record.attrs, **computed}

    # The attributes each match returns.

    def project(self, candidate: _Candidate) -> JsonDict:
        returned = self._returned_tags()
        attrs = candidate.attrs
        if self.query.include_all:
            selected = {tag: value for tag, value in attrs.items() if "BulkDataURI" not in value}
        else:
            selected = {tag: attrs[tag] for tag in returned if tag in attrs}
        return dict(sorted(selected.items()))

    def _returned_tags(self) -> frozenset[str]:
        level = self.query.level
        tags = set(self.query.includefields) | {c.top_level_tag for c in self.query.constraints}
        if level == STUDY:
            tags |= STUDY_DEFAULTS
        elif level == SERIES:
            tags |= SERIES_DEFAULTS
            if self.study is None:
                tags |= STUDY_DEFAULTS
        else:
            tags |= INSTANCE_DEFAULTS
            if self.series is None:
                tags |= SERIES_DEFAULTS
            if self.study is None:
                tags |= STUDY_DEFAULTS
        return frozenset(tags)


def usable_constraints(query: QidoQuery) -> tuple[list[Constraint], list[str]]:
    """Return the constraints matched at the query's level, and a Warning for each other."""
    from pydicom.datadict import keyword_for_tag

    level = query.level
    supported = _STUDY_LEVEL
    if level in (SERIES, INSTANCE):
        supported = supported | _SERIES_LEVEL
    usable = []
    warnings = []
    for constraint in query.constraints:
        top = constraint.top_level_tag
        if level == INSTANCE or top in supported or constraint.is_universal:
            usable.append(constraint)
        else:
            keyword = keyword_for_tag(int(top, 16)) or top
            warnings.append(f"{keyword} is not matched in a {level.lower()} search and was ignored")
    return usable, warnings


def _tagged(run: _Search) -> Iterator[tuple[OrderKey, _Search, _Candidate]]:
    """Yield the matches of one site's search with their order key and the search."""
    for key, candidate in run.ordered():
        yield key, run, candidate


def _study_uid(record: IndexRecord) -> str:
    return record.pk.split("#", 1)[1]


def _full_metadata(record: IndexRecord) -> JsonDict:
    if record.metadata is None:
        return {}
    return json.loads(zlib.decompress(record.metadata))  # type: ignore[no-any-return]


def _value(vr: str, value: Any) -> JsonDict:
    return {"vr": vr, "Value": [value]}


def _values(vr: str, values: list[Any]) -> JsonDict:
    return {"vr": vr, "Value": values} if values else {"vr": vr}
